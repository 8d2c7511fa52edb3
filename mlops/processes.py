"""Coordination between processes: whether a recorded process is still the one that was recorded
(services' state files, MLflow runs), and the lock that serialises the creation of a SQLite file.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def sqlite_creation_lock(db_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.create-lock`` while ``db_path`` is opened (and maybe created).

    Two processes creating a new SQLite file at once race on its first connection and its schema;
    the kernel releases the lock if its holder dies. In a read-only folder nobody can be creating
    the file, so no lock is taken.
    """
    try:
        handle = open(db_path.with_name(db_path.name + ".create-lock"), "a")  # noqa: SIM115 (closed below)
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def process_alive(pid: int, create_time: float, tolerance_s: float = 1.0) -> bool:
    """``pid`` runs, is not a zombie, and started at ``create_time`` (so it is not a reused PID).

    Args:
        pid: The recorded process id.
        create_time: Its recorded start time (seconds since the epoch, as psutil reports it).
        tolerance_s: How far the live process's start time may be from the recorded one.
    """
    import psutil  # here, not at import: the serving path imports this module for its lock alone

    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - create_time) < tolerance_s and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
