"""Serving probe run by ``make bench`` in a fresh process: ``python -m mlops.serving_probe MODELS_DIR LOG N``.

It imports only what a serving process imports, so the RSS it reports is the chatbot's own. It
answers ``N`` queries on one thread, then ``N`` more shared by two threads (one bot, one inference
log), and reports the latency percentiles and throughput of each.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERVING_QUERIES = [
    "Where can I see leopards in Sri Lanka?", "best time to visit kyoto", "hi there", "cheap hostels in lisbon",
    "how do i get from colombo to kandy", "is it safe to drink tap water in mexico city", "thanks!",
    "what is sigiriya famous for", "write me a python script", "things to do in ella", "visa for sri lanka?",
    "how much does a week in iceland cost", "beach towns near galle", "plan 10 days in sri lanka",
]  # fmt: skip


def timed_run(answer, n: int, threads: int) -> dict:
    """``n`` queries through ``answer`` on ``threads`` threads: latency percentiles (ms) and queries/s."""
    import numpy as np

    def one(i: int) -> float:
        return answer(SERVING_QUERIES[i % len(SERVING_QUERIES)])["latency_ms"]

    tic = time.perf_counter()
    if threads == 1:
        latencies = [one(i) for i in range(n)]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            latencies = list(pool.map(one, range(n), chunksize=16))
    wall = time.perf_counter() - tic
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "qps": n / wall,
    }


def probe_serving(models_dir: Path, log_path: Path, n: int) -> dict:
    """Run in a fresh process: load the bot, answer ``n`` queries with logging on, report figures."""
    import psutil

    from mlops.chatbot import TravelChatbot
    from mlops.monitoring.inference_log import InferenceLog

    tic = time.perf_counter()
    bot = TravelChatbot.load(models_dir)
    load_s = time.perf_counter() - tic
    log = InferenceLog(log_path, bot.versions)
    bot.on_response = log
    for query in SERVING_QUERIES:
        bot.process_query(query)
    one = timed_run(bot.process_query, n, threads=1)
    two = timed_run(bot.process_query, n, threads=2)
    log.close()
    return {
        "load_s": load_s,
        **{key: value for key, value in one.items() if key != "qps"},
        **{f"{key}_2_threads": value for key, value in two.items() if key != "qps"},
        "qps_1_thread": one["qps"],
        "qps_2_threads": two["qps"],
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "logged_rows": log.written,
        "torch_loaded": "torch" in sys.modules,
        "sklearn_loaded": "sklearn" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(probe_serving(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))
