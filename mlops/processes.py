"""Whether a recorded process is still the one that was recorded (services' state files, MLflow runs)."""

from __future__ import annotations

import psutil


def process_alive(pid: int, create_time: float, tolerance_s: float = 1.0) -> bool:
    """``pid`` runs, is not a zombie, and started at ``create_time`` (so it is not a reused PID).

    Args:
        pid: The recorded process id.
        create_time: Its recorded start time (seconds since the epoch, as psutil reports it).
        tolerance_s: How far the live process's start time may be from the recorded one.
    """
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - create_time) < tolerance_s and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
