"""System health: a real sample of this machine, and a serving process found by its command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mlops.monitoring.system import read_system, sample

from .conftest import write_settings


@pytest.fixture
def fake_server():
    """A process whose command line names ``mlops/chatbot/app.py``, as ``streamlit run`` would; stopped by PID."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(30 * 2**20); time.sleep(60)", "mlops/chatbot/app.py"],
        start_new_session=True,
    )
    time.sleep(0.5)  # let it allocate
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=10)


def test_sample_records_machine_and_serving_processes(tmp_path, fake_server):
    settings = write_settings(tmp_path)
    row = sample(settings, now=1_800_000_000.0)
    assert 0.0 <= row["cpu_percent"] <= 100.0 and 0.0 < row["memory_percent"] <= 100.0
    assert 0.0 < row["disk_percent"] <= 100.0
    processes = json.loads(row["processes"])
    ours = [p for p in processes if p["pid"] == fake_server.pid]
    assert len(ours) == 1 and ours[0]["rss_mb"] >= 30 and "mlops/chatbot/app.py" in ours[0]["cmd"]
    assert row["serving_processes"] == len(processes) >= 1
    assert row["serving_rss_mb"] >= ours[0]["rss_mb"]

    stored = read_system(settings)
    assert len(stored) == 1 and stored["ts"].iloc[0] == 1_800_000_000.0
    assert stored["cpu_percent"].iloc[0] == row["cpu_percent"]
    assert read_system(settings, since=1_800_000_001.0).empty


def test_patterns_come_from_config(tmp_path, fake_server):
    settings = write_settings(
        tmp_path, {"monitoring_config.yaml": {"monitoring": {"serving_processes": ["no-such-server"]}}}
    )
    row = sample(settings, reader=lambda s: {"cpu_percent": 1.0, "memory_percent": 2.0, "disk_percent": 3.0,
                                            "serving_processes": 0, "serving_rss_mb": 0.0,
                                            "serving_cpu_percent": 0.0, "processes": []})  # fmt: skip
    assert row["cpu_percent"] == 1.0  # an injected reader is stored as is
    from mlops.monitoring.system import read_machine

    assert all(p["pid"] != fake_server.pid for p in read_machine(settings, interval=0.05)["processes"])
