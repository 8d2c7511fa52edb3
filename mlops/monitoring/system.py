"""System health: the machine's CPU, memory and disk, and the serving processes' RSS and CPU.

``sample`` takes one reading and stores it in the ``system_health`` table of the inference-log
database, so the dashboard and the alert rules read the same history whichever process sampled.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable

import pandas as pd

from mlops.config import Settings
from mlops.monitoring.inference_log import insert_rows, read_log, system_table

logger = logging.getLogger(__name__)

CPU_INTERVAL_S = 0.2  # psutil needs two readings to compute a CPU percentage
MAX_CMD_CHARS = 200


def serving_processes(patterns: list[str], exclude_pid: int | None = None) -> list:
    """The running processes whose command line contains one of ``patterns`` (psutil ``Process``es)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        if process.info["pid"] != exclude_pid and any(pattern in cmdline for pattern in patterns):
            found.append(process)
    return found


def _process_reading(process, cpu_percent: float) -> dict | None:
    import psutil

    try:
        return {
            "pid": process.pid,
            "cmd": " ".join(process.cmdline())[:MAX_CMD_CHARS],
            "rss_mb": process.memory_info().rss / 2**20,
            "cpu_percent": cpu_percent,
        }
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # it exited between the two readings
        return None


def read_machine(settings: Settings, interval: float = CPU_INTERVAL_S) -> dict:
    """One reading of the machine and the serving processes (nothing is stored).

    Args:
        settings: ``monitoring.serving_processes`` names the processes; the disk is the project's.
        interval: Seconds between the two CPU readings.

    Returns:
        ``cpu_percent``, ``memory_percent``, ``disk_percent``, ``serving_processes`` (count),
        ``serving_rss_mb``, ``serving_cpu_percent`` and ``processes`` (one dict per process).
    """
    import psutil

    processes = serving_processes(settings.monitoring.serving_processes, exclude_pid=os.getpid())
    for process in processes:
        try:
            process.cpu_percent(None)  # starts the process's CPU measurement
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    cpu = psutil.cpu_percent(interval=interval)
    readings = []
    for process in processes:
        try:
            process_cpu = process.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        reading = _process_reading(process, process_cpu)
        if reading is not None:
            readings.append(reading)
    return {
        "cpu_percent": float(cpu),
        "memory_percent": float(psutil.virtual_memory().percent),
        "disk_percent": float(psutil.disk_usage(str(settings.root)).percent),
        "serving_processes": len(readings),
        "serving_rss_mb": float(sum(r["rss_mb"] for r in readings)),
        "serving_cpu_percent": float(sum(r["cpu_percent"] for r in readings)),
        "processes": readings,
    }


def sample(settings: Settings, now: float | None = None, reader: Callable[[Settings], dict] = read_machine) -> dict:
    """Take one reading and store it in the ``system_health`` table.

    Args:
        settings: The inference-log database and the serving-process patterns.
        now: Time stamp of the row in seconds since the epoch; defaults to the wall clock.
        reader: What reads the machine (injectable for tests).

    Returns:
        The stored row.
    """
    reading = reader(settings)
    row = {
        "ts": time.time() if now is None else now,
        "host": socket.gethostname()[:255],
        **{key: value for key, value in reading.items() if key != "processes"},
        "processes": json.dumps(reading.get("processes", [])),
    }
    insert_rows(settings.inference_log_url, system_table, [row])
    logger.debug("system health: cpu %.0f%% memory %.0f%%", row["cpu_percent"], row["memory_percent"])
    return row


def read_system(settings: Settings, since: float | None = None) -> pd.DataFrame:
    """The stored system-health samples, oldest first, optionally from ``since`` (epoch seconds) on."""
    return read_log(settings.inference_log_url, since=since, table=system_table)
