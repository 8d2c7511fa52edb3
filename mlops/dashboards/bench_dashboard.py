"""Benchmark: how long the monitoring dashboard takes to load with a large inference log.

    python -m mlops.dashboards.bench_dashboard [--rows 100000] [--minutes 60] [--repeat 3] [--budget 3.0]

Fills a temporary inference log with ``--rows`` responses through the real ``InferenceLog`` (spread
over the last ``--minutes``, so all of them fall in the dashboard's default one-hour window, plus
thumbs up/down on 1 % of them), points a temporary config at it (models and MLflow stay the
project's own, read only) and times ``AppTest`` runs of the page:

* first run: a fresh process (imports, MLflow store start-up) with empty caches;
* cold data: the process warm, ``st.cache_data`` cleared: what a user opening the page waits for;
* warm: the next refresh within the same cache period.

With ``--warm-start`` the process first does what ``python -m mlops.dashboards.serve`` (how the
launchers start the dashboard) does before accepting connections, so the first run is what the
first visitor after a start waits for.

Exits 1 when a cold-data load (or, with ``--warm-start``, the first view) exceeds ``--budget``
seconds or the page shows an exception.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mlops.config import CONFIG_DIR, PROJ_ROOT

PAGE = PROJ_ROOT / "mlops" / "dashboards" / "mlops_monitoring_dashboard.py"
INTENTS = ("destination_info", "best_time_to_visit", "weather", "visa_requirements", "activities",
           "food_and_cuisine", "transportation", "accommodation", "greeting", "out_of_scope")  # fmt: skip


def fill_log(location: Path, rows: int, minutes: float, seed: int = 0) -> float:
    """Write ``rows`` responses spread evenly over the last ``minutes`` and feedback on 1 % of them.

    Returns:
        Seconds the writing took.
    """
    from mlops.monitoring.inference_log import InferenceLog

    rng = random.Random(seed)
    start = time.time() - minutes * 60
    step = minutes * 60 / rows
    tick = iter(start + i * step for i in range(rows + rows // 100 + 10))
    log = InferenceLog(location, {"llm_model": "1", "rag_model": "1"}, batch_size=2000, clock=lambda: next(tick))
    tic = time.perf_counter()
    ids = []
    for i in range(rows):
        intent = INTENTS[rng.randrange(len(INTENTS))]
        ids.append(
            log.record(
                {
                    "query": f"synthetic travel question {i % 5000} about {intent.replace('_', ' ')}",
                    "intent": intent,
                    "confidence": rng.betavariate(5, 2),
                    "latency_ms": rng.lognormvariate(1.5, 0.5),
                    "sources": [{"name": "Kandy", "score": 0.7}] if intent != "out_of_scope" else [],
                }
            )
        )
    log.flush(timeout=120)
    for request_id in ids[::100]:
        log.feedback(request_id, 1 if rng.random() < 0.8 else -1)
    log.close()
    if log.written != rows:
        raise RuntimeError(f"only {log.written} of {rows} rows were written")
    return time.perf_counter() - tic


def write_config(config_dir: Path, log_path: Path) -> None:
    """The project's config files, with the inference log moved to ``log_path``."""
    config_dir.mkdir(parents=True, exist_ok=True)
    for source in CONFIG_DIR.glob("*.yaml"):
        shutil.copy(source, config_dir / source.name)
    monitoring = yaml.safe_load((config_dir / "monitoring_config.yaml").read_text())
    monitoring["monitoring"]["inference_log"] = str(log_path)
    (config_dir / "monitoring_config.yaml").write_text(yaml.safe_dump(monitoring))


def time_page(clear_cache: bool) -> tuple[float, float, object]:
    """Wall-clock and CPU seconds of one full AppTest run of the page, and the AppTest.

    CPU time (of the whole process: the page runs in AppTest's script thread) is what the load
    costs on an idle machine; wall-clock time also counts waiting for a busy CPU.
    """
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    if clear_cache:
        st.cache_data.clear()
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    tic, cpu = time.perf_counter(), time.process_time()
    at.run()
    return time.perf_counter() - tic, time.process_time() - cpu, at


def requests_shown(at) -> str:
    return next((m.value for m in at.metric if m.label == "Requests"), "(not shown)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="inference-log rows to write (default 100000)")
    parser.add_argument("--minutes", type=float, default=55.0, help="spread the rows over the last N minutes")
    parser.add_argument("--repeat", type=int, default=3, help="cold-data and warm runs to time (default 3)")
    parser.add_argument("--budget", type=float, default=3.0, help="fail when a cold-data load exceeds this (s)")
    parser.add_argument("--warm-start", action="store_true",
                        help="warm up first, as `python -m mlops.dashboards.serve` does")  # fmt: skip
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        log_path = Path(tmp) / "inference_log.db"
        print(f"writing {args.rows:,} rows to {log_path} ...", flush=True)
        seconds = fill_log(log_path, args.rows, args.minutes)
        print(f"  written in {seconds:.1f} s")
        write_config(Path(tmp) / "configs", log_path)
        os.environ["MLOPS_CONFIG_DIR"] = str(Path(tmp) / "configs")

        warm_up_s = None
        if args.warm_start:
            from mlops.dashboards.serve import warm_up

            tic = time.perf_counter()
            warm_up()
            warm_up_s = time.perf_counter() - tic
        first = time_page(clear_cache=True)
        cold = [time_page(clear_cache=True) for _ in range(args.repeat)]
        warm = [time_page(clear_cache=False) for _ in range(args.repeat)]
        failed = [run for *_, run in [first, *cold, *warm] if run.exception]
        shown = requests_shown(cold[-1][2])

    cold_s = [wall for wall, _, _ in cold]
    print(f"page load with {args.rows:,} logged queries (Requests metric shows {shown}), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:")  # fmt: skip
    if warm_up_s is None:
        print(f"  first run (fresh process: imports, MLflow start-up): {first[0]:.2f} s wall, {first[1]:.2f} s CPU")
    else:
        print(f"  server warm-up before accepting visitors: {warm_up_s:.2f} s")
        print(f"  first run after the warm-up (first visitor): {first[0]:.2f} s wall, {first[1]:.2f} s CPU")
    for name, runs in ((f"cold data (caches cleared), median of {args.repeat}", cold),
                       (f"warm (cached refresh), median of {args.repeat}     ", warm)):  # fmt: skip
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"  slowest cold-data load: {max(cold_s):.2f} s wall (budget {args.budget:.1f} s)")
    if failed:
        print(f"FAIL: the page showed an exception: {failed[0].exception[0].value}")
        return 1
    if warm_up_s is not None and first[0] > args.budget:
        print(f"FAIL: the first view after the warm start took {first[0]:.2f} s > {args.budget:.1f} s")
        return 1
    if max(cold_s) > args.budget:
        print(f"FAIL: a cold-data load took {max(cold_s):.2f} s > {args.budget:.1f} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
