"""HTTP throughput of the ``travel_chatbot`` pyfunc served by ``mlflow models serve``, on loopback.

``python -m mlops.benchmarks.http_load [--requests 3000] [--concurrency 4] [--workers 2] [--tracking-uri URI]``

The server is started with ``mlflow models serve -m models:/travel_chatbot@champion --env-manager
local`` on 127.0.0.1 and a free port, in its own process group, and stopped by that PID. The load
generator keeps ``concurrency`` keep-alive connections (stdlib ``http.client``, one thread each),
sends a bounded number of requests, each one query in the pyfunc's JSON input format
(``dataframe_split``), and reports requests/s, errors and latency percentiles. Client and server
share the machine's cores, so the figure is what one box does end to end, not the server alone.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

CHATBOT_URI = "models:/travel_chatbot@champion"


def query_body(text: str) -> bytes:
    """One query as the pyfunc's JSON input (``dataframe_split`` with the signature's ``text`` column)."""
    return json.dumps({"dataframe_split": {"columns": ["text"], "data": [[text]]}}).encode()


@dataclass
class LoadResult:
    """What a load run measured. ``latencies_ms`` holds successful requests only."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    wall_s: float = 0.0
    concurrency: int = 1
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, float | int | str]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "concurrency": self.concurrency,
            "wall_s": self.wall_s,
            "rps": self.rps,
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "first_error": self.first_error,
        }


def run_load(
    url: str,
    bodies: Sequence[bytes],
    requests: int,
    concurrency: int = 4,
    timeout: float = 10.0,
    max_seconds: float = 120.0,
) -> LoadResult:
    """POST ``requests`` bodies (cycled) to ``url`` over ``concurrency`` keep-alive connections.

    Bounded twice: never more than ``requests`` requests, and no new request after ``max_seconds``.
    A request counts as ok on a 2xx status with its body read in full; anything else (status, reset,
    timeout) is an error and the connection is reopened.

    Args:
        url: ``http://host:port/path``.
        bodies: Request bodies (JSON), sent round-robin.
        requests: Total requests to send.
        concurrency: Connections, one thread each.
        timeout: Socket timeout of each request in seconds.
        max_seconds: Stop issuing requests after this long.

    Returns:
        The counts, the wall time and the latency of every successful request.
    """
    if requests < 0 or concurrency < 1 or not bodies:
        raise ValueError("need requests >= 0, concurrency >= 1 and at least one body")
    parts = urlsplit(url)
    path = parts.path or "/"
    tickets = itertools.count()  # next() on a count is atomic under the GIL: each ticket taken once
    lock = threading.Lock()
    result = LoadResult(concurrency=concurrency)
    start = time.perf_counter()
    deadline = start + max_seconds

    def worker() -> None:
        conn = None
        latencies, ok, errors, first_error = [], 0, 0, ""
        while True:
            ticket = next(tickets)
            if ticket >= requests or time.perf_counter() > deadline:
                break
            body = bodies[ticket % len(bodies)]
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                tic = time.perf_counter()
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                elapsed = (time.perf_counter() - tic) * 1000.0
                if 200 <= reply.status < 300:
                    ok += 1
                    latencies.append(elapsed)
                else:
                    errors += 1
                    first_error = first_error or f"HTTP {reply.status}"
                if reply.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            result.ok += ok
            result.errors += errors
            result.latencies_ms.extend(latencies)
            result.first_error = result.first_error or first_error

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max_seconds + timeout + 5)
    result.wall_s = time.perf_counter() - start
    result.requests = result.ok + result.errors
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, workers: int, model_uri: str = CHATBOT_URI) -> list[str]:
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    return [
        mlflow_bin, "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def serving_env(tracking_uri: str) -> dict[str, str]:
    """The server's environment: the store to read, no telemetry, and the venv's bin first on PATH.

    ``mlflow models serve`` execs ``uvicorn`` from PATH, so the venv's bin must come first.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    bin_dir = str(Path(sys.executable).parent)
    return {
        **env,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
    }


def wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> float:
    """Poll ``url`` until it answers 200; returns the seconds it took.

    Raises:
        RuntimeError: The process exited or ``timeout`` passed first.
    """
    tic = time.perf_counter()
    while time.perf_counter() - tic < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the model server exited with code {process.returncode} before answering")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return time.perf_counter() - tic
        time.sleep(0.25)
    raise RuntimeError(f"the model server did not answer {url} within {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its PID), then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def served(
    tracking_uri: str, workers: int, log_path: Path, start_timeout: float = 180.0
) -> Iterator[tuple[str, float]]:
    """Run ``mlflow models serve`` for the champion bot; yields ``(base URL, start-up seconds)``."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            serve_command(port, workers), env=serving_env(tracking_uri), cwd=log_path.parent,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        startup = wait_until_up(f"{base}/ping", process, start_timeout)
        yield base, startup, process
    finally:
        stop(process)


def tree_rss_mb(pid: int) -> dict[str, float]:
    """Resident memory (MB) of a process tree: the total, and each process by its role.

    ``mlflow models serve`` stays alive as the parent of ``uvicorn``; with ``--workers N`` uvicorn
    is a supervisor of N worker processes. The serving worker is the largest process of the tree.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"total": 0.0, "worker": 0.0, "cli": 0.0}
    sizes = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(proc.memory_info().rss / 2**20)
    return {"total": sum(sizes), "worker": max(sizes[1:] or [0.0]), "cli": sizes[0] if sizes else 0.0}


def check_answer(base: str, text: str = "hello!") -> str:
    """One real request: the intent the served bot gives ``text`` (proves the server answers queries)."""
    request = urllib.request.Request(f"{base}/invocations", query_body(text), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())["predictions"][0]["intent"]


def bench_http(
    tracking_uri: str,
    queries: Sequence[str],
    requests: int = 3000,
    concurrency: int = 4,
    workers: Sequence[int] = (1, 2),
    workdir: Path | None = None,
) -> list[dict]:
    """One row per worker count: start the server, warm it up, load it, stop it."""
    bodies = [query_body(q) for q in queries]
    rows = []
    for n in workers:
        log_path = Path(workdir or ".") / f"serve-{n}.log"
        with served(tracking_uri, n, log_path) as (base, startup, process):
            intent = check_answer(base)
            run_load(f"{base}/invocations", bodies, min(200, requests), concurrency)  # warm-up, not counted
            result = run_load(f"{base}/invocations", bodies, requests, concurrency)
            rss = tree_rss_mb(process.pid)
        row = {"workers": n, "startup_s": startup, "check_intent": intent, "server_rss_mb": rss["total"],
               "worker_rss_mb": rss["worker"], "cli_rss_mb": rss["cli"]}  # fmt: skip
        rows.append({**row, **result.summary()})
    return rows


def main(argv: list[str] | None = None) -> None:
    import tempfile

    from mlops.config import load_settings
    from mlops.serving_probe import SERVING_QUERIES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="store holding travel_chatbot@champion (default: the configured one)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    uri = args.tracking_uri or load_settings().tracking_uri
    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
        rows = bench_http(uri, SERVING_QUERIES, args.requests, args.concurrency, args.workers, Path(tmp))
    print(json.dumps(rows, indent=2))  # noqa: T201 - the CLI's own output


if __name__ == "__main__":
    main()
