"""Monitoring: the inference log now; metrics, alerts, drift and the traffic simulator build on it."""
