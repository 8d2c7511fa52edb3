"""The serving runtime: ``TravelChatbot`` loads the deployed models (no torch, no training code)."""

from mlops.chatbot.bot import DeploymentError, TravelChatbot

__all__ = ["DeploymentError", "TravelChatbot"]
