"""Reliability benchmark: adversarial-query latency, then steady in-process load with the inference log on.

    python -m mlops.reliability_bench [--minutes 10] [--qps 200] [--threads 4] [--models-dir DIR] [--json FILE]

Phase 1 answers a fixed set of hostile and unusual queries (empty, 100,000 characters, binary junk,
emoji, right-to-left text, SQL and HTML injection...) many times and reports the p50/p99 latency of
those up to 1,000 characters (target p99 <= 10 ms) and of the longer ones; any exception fails it.

Phase 2 sends ``--qps`` queries a second for ``--minutes`` minutes, paced from ``--threads`` threads,
through the deployed ``TravelChatbot`` with every answer written to an inference log in a temporary
folder (with the configured retention), and every minute runs the alert rules on that log in a
separate process, as the monitor (``python -m mlops.monitoring check --loop``) does. It reports
the RSS growth after warm-up (target <= 10 %), the rows lost between
the bot and the log (target 0) and the alerts fired (target none).

The deployed models are only read. Exit code 0 when every target is met, 1 otherwise, 2 when
nothing is deployed or the configuration is invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ADVERSARIAL_QUERIES: dict[str, object] = {
    "empty": "",
    "whitespace": "   \t\n  ",
    "emoji": "🏖️🐘🌴 best beaches?? 🇱🇰🇱🇰",
    "rtl_arabic": "ما هو أفضل وقت لزيارة سريلانكا؟",
    "rtl_hebrew": "מתי הכי טוב לבקר ביפן?",
    "sinhala": "ලංකාවේ කොළඹ නගරය",
    "sql_injection": "'; DROP TABLE inference_log; -- where to go in june?",
    "sql_union": "1' UNION SELECT * FROM alerts WHERE '1'='1",
    "html_script": "<script>alert('x')</script> beaches in Thailand",
    "html_img": '<img src=x onerror="fetch(`//evil`)"> cheap hostels',
    "markdown": "**bold** [link](javascript:alert(1)) `code` # heading",
    "format_string": "%s %d {0} {__class__} ${PATH} $(rm -rf /)",
    "control_chars": "hello\x00\x01\x02\x1b[31m world\r\n",
    "lone_surrogate": "visa \ud800 for japan",
    "binary_bytes": bytes(range(256)),
    "binary_latin1": bytes(range(256)).decode("latin-1"),
    "non_string": 12345,
    "none": None,
    "zalgo": "h̸̡̪̯ͨ͊̽̅̾̎Ȩ̬̩̾͛ͪ̈́̀́͘ ̶̧̨̱̹̭̯ͧ̾ͬC̷̙̲̝͖ͭ̏ͥͮ͟Oͮ͏̮̪̝͍M̲̖͊̒ͪͩͬ̚̚͜Ȇ̴̟̟͙̞ͩ͌͝S̨̥̫͎̭ͯ̿̔̀ͅ",
    "1000_chars": ("where should I travel in december with kids and a small budget? " * 20)[:1000],
    "1000_random": "".join(chr(0x20 + (i * 7919) % 0x2FF0) for i in range(1000)),
    "10000_chars": "sri lanka " * 1000,
    "100000_chars": "x" * 100_000,
    "100000_words": "leopard " * 12_500,
}


def adversarial_latency(bot, repeats: int = 200) -> dict:
    """Answer every adversarial query ``repeats`` times; latency percentiles by input size.

    Returns:
        ``{"short": {...}, "long": {...}, "errors": [...], "answers": {name: intent}}``; "short" are
        inputs of at most 1,000 characters.
    """
    short, long, errors, answers, worst = [], [], [], {}, {}
    for query in ADVERSARIAL_QUERIES.values():  # warm-up: first calls fill caches, they are not steady state
        try:
            bot.process_query(query)
        except Exception:  # reported below, where each query is tried again
            pass
    for name, query in ADVERSARIAL_QUERIES.items():
        size = len(query) if isinstance(query, str | bytes) else len(str(query))
        mine = []
        for _ in range(repeats):
            try:
                result = bot.process_query(query)
            except Exception as exc:  # the point of this phase: any exception is a finding
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                break
            mine.append(result["latency_ms"])
            answers[name] = result["intent"]
        (short if size <= 1000 else long).extend(mine)
        worst[name] = float(np.percentile(mine, 99)) if mine else float("nan")
    return {
        "short": _percentiles(short), "long": _percentiles(long), "errors": errors, "answers": answers,
        "p99_by_query": worst,
    }  # fmt: skip


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    array = np.asarray(values)
    return {"n": len(values), **{f"p{q}": float(np.percentile(array, q)) for q in (50, 95, 99)}, "max": array.max()}


@dataclass
class LoadResult:
    sent: int = 0
    seconds: float = 0.0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    baseline_mb: float = 0.0
    final_mb: float = 0.0
    logged_rows: int = 0
    log_failed: int = 0
    pruned: int = 0
    alerts_fired: list[str] = field(default_factory=list)
    checks: int = 0
    latency: dict = field(default_factory=dict)
    behind_schedule: int = 0

    @property
    def growth(self) -> float:
        return (self.final_mb - self.baseline_mb) / self.baseline_mb if self.baseline_mb else 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.logged_rows


def steady_load(settings, bot, queries: list[str], minutes: float, qps: float, threads: int, say) -> LoadResult:
    """Paced traffic for ``minutes`` at ``qps`` through ``bot`` into the log of ``settings``.

    The log, alert log and drift reference of ``settings`` must point at a scratch folder.
    """
    import psutil

    from mlops.monitoring.inference_log import InferenceLog, read_log

    process = psutil.Process()
    log = InferenceLog.from_settings(settings, bot.versions)
    bot.on_response = log
    duration = minutes * 60.0
    capacity = int(duration * qps * 1.05) + 1000
    latencies = np.zeros(capacity, dtype=np.float32)  # preallocated: the measurement must not grow memory
    counter = iter(range(capacity))
    lock = threading.Lock()
    result = LoadResult()
    start = time.monotonic()
    stop_at = start + duration
    interval = threads / qps

    def worker(offset: int) -> None:
        due = start + offset * interval / threads
        late = 0
        while due < stop_at:
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > 1.0:
                late += 1
            with lock:
                index = next(counter)
            query = queries[index % len(queries)]
            latencies[index] = bot.process_query(query)["latency_ms"]
            due += interval
        with lock:
            result.behind_schedule += late

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    warmup = min(60.0, max(5.0, duration * 0.1))
    # the first alert check runs at the end of the warm-up, before the baseline: its one-time imports and
    # the drift reference it builds are start-up cost, not growth
    next_check, next_sample = start + warmup, start + warmup

    def alert_check(now: float) -> None:
        fired = run_alert_check(settings)
        result.checks += 1
        result.alerts_fired += fired
        say(f"  {now - start:5.0f}s: alert check {result.checks}: {len(fired)} open; "
            f"RSS {process.memory_info().rss / 2**20:.1f} MB")  # fmt: skip

    while any(thread.is_alive() for thread in pool):
        time.sleep(0.5)
        now = time.monotonic()
        if now >= next_check:
            alert_check(now)
            next_check = now + 60.0
        if now >= next_sample:
            rss = process.memory_info().rss / 2**20
            result.rss_mb.append((round(now - start, 1), round(rss, 1)))
            if not result.baseline_mb:
                result.baseline_mb = rss
                say(f"  baseline RSS after {warmup:.0f}s warm-up and the first alert check: {rss:.1f} MB")
            next_sample = now + 10.0
    result.seconds = time.monotonic() - start
    result.sent = next(counter)
    log.close()
    result.final_mb = process.memory_info().rss / 2**20
    result.logged_rows = len(read_log(settings.inference_log_url))
    result.log_failed, result.pruned = log.failed, log.pruned
    result.latency = _percentiles(list(latencies[: result.sent]))
    result.alerts_fired += run_alert_check(settings)
    return result


def run_alert_check(settings) -> list[str]:
    """The alert rules over the scratch log, in a separate process like the real monitor; the open alerts."""
    folder = Path(settings.monitoring.inference_log).parent
    command = [sys.executable, "-m", "mlops.reliability_bench", "--alert-check", str(folder),
               "--models-dir", str(settings.models_dir)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return [f"alert check failed: {done.stderr.strip()[-300:]}"]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _alert_check_main(folder: Path, models_dir: Path | None) -> int:
    from mlops.config import load_settings
    from mlops.monitoring import alerts

    settings = load_settings()
    if models_dir:
        settings = settings.model_copy(
            update={"deployment": settings.deployment.model_copy(update={"models_dir": str(models_dir)})}
        )
    results = alerts.check(scratch_settings(settings, folder), channels=[], collect_first=False)
    print(json.dumps([f"{r.rule}={r.value:.3f}" for r in results if r.is_open]))
    return 0


def scratch_settings(settings, folder: Path):
    """``settings`` with the inference log, alert log and drift reference in ``folder`` (models unchanged)."""
    monitoring = settings.monitoring.model_copy(
        update={
            "inference_log": str(folder / "inference_log.db"),
            "alert_log": str(folder / "alerts.log"),
            "drift_reference_dir": str(folder / "monitoring"),
        }
    )
    return settings.model_copy(update={"monitoring": monitoring})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady load (default 10)")
    parser.add_argument("--qps", type=float, default=200.0, help="queries per second (default 200)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--repeats", type=int, default=200, help="answers per adversarial query (default 200)")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: deployment.models_dir")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--alert-check", type=Path, default=None, help=argparse.SUPPRESS)  # the monitor process
    args = parser.parse_args(argv)
    if args.alert_check:
        return _alert_check_main(args.alert_check, args.models_dir)
    if args.minutes <= 0 or args.qps <= 0 or args.threads < 1:
        parser.error("--minutes and --qps must be positive, --threads at least 1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from mlops.chatbot import DeploymentError, TravelChatbot
    from mlops.config import ConfigError, load_settings
    from mlops.data import DataValidationError, load_datasets

    def say(message: str) -> None:
        print(message, flush=True)

    try:
        settings = load_settings()
        models_dir = args.models_dir or settings.models_dir
        if args.models_dir:
            settings = settings.model_copy(
                update={"deployment": settings.deployment.model_copy(update={"models_dir": str(models_dir)})}
            )
        bot = TravelChatbot.load(models_dir)
        data = load_datasets(settings.data_dir)
    except (ConfigError, DeploymentError, DataValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"models: {models_dir} release {bot.manifest.get('release')} {bot.versions}")

    say(f"phase 1: {len(ADVERSARIAL_QUERIES)} adversarial queries x {args.repeats}")
    adversarial = adversarial_latency(bot, args.repeats)
    short, long = adversarial["short"], adversarial["long"]
    say(f"  <= 1,000 chars: n={short['n']} p50 {short['p50']:.3f} ms  p99 {short['p99']:.3f} ms  "
        f"max {short['max']:.3f} ms")  # fmt: skip
    say(f"  >  1,000 chars: n={long['n']} p50 {long['p50']:.3f} ms  p99 {long['p99']:.3f} ms")
    slowest = sorted(adversarial["p99_by_query"].items(), key=lambda item: -item[1])[:4]
    say("  slowest p99: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in slowest))
    say(f"  exceptions: {adversarial['errors'] or 'none'}")

    # a realistic mix: the held-out queries users ask (about 6 % out of scope), in a fixed shuffled order
    held_out = data.intents[data.intents["split"] != "train"]["text"].tolist()
    queries = [held_out[i] for i in np.random.default_rng(7).permutation(len(held_out))]
    say(f"phase 2: {args.qps:g} queries/s for {args.minutes:g} min from {args.threads} threads")
    with tempfile.TemporaryDirectory(prefix="mlops-reliability-") as tmp:
        scratch = scratch_settings(settings, Path(tmp))
        load = steady_load(scratch, bot, queries, args.minutes, args.qps, args.threads, say)
    achieved = load.sent / load.seconds
    say(f"  sent {load.sent:,} in {load.seconds:.0f}s ({achieved:.1f}/s); logged {load.logged_rows:,}; "
        f"lost {load.lost}; write failures {load.log_failed}; behind schedule >1s: {load.behind_schedule}")  # fmt: skip
    say(f"  RSS baseline {load.baseline_mb:.1f} MB -> final {load.final_mb:.1f} MB ({load.growth:+.1%}); "
        f"max {max((m for _, m in load.rss_mb), default=0):.1f} MB")  # fmt: skip
    say(f"  latency p50 {load.latency['p50']:.3f} ms p99 {load.latency['p99']:.3f} ms; "
        f"alert checks {load.checks}, fired: {load.alerts_fired or 'none'}")  # fmt: skip

    verdicts = {
        "adversarial p99 <= 10 ms (inputs <= 1,000 chars)": short["p99"] <= 10.0,
        "no exception on adversarial input": not adversarial["errors"],
        "memory growth <= 10 %": load.growth <= 0.10,
        "no lost log rows": load.lost == 0 and load.log_failed == 0,
        "no alert fired": not load.alerts_fired,
        "rate achieved (>= 95 % of --qps)": achieved >= 0.95 * args.qps,
    }
    for name, ok in verdicts.items():
        say(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        figures = {
            "command": " ".join(["python -m mlops.reliability_bench", *(argv if argv is not None else sys.argv[1:])]),
            "adversarial": {k: v for k, v in adversarial.items() if k != "answers"},
            "load": {
                "sent": load.sent, "seconds": load.seconds, "qps": achieved, "logged_rows": load.logged_rows,
                "lost": load.lost, "log_failed": load.log_failed, "baseline_mb": load.baseline_mb,
                "final_mb": load.final_mb, "growth": load.growth, "rss_mb": load.rss_mb, "latency": load.latency,
                "alert_checks": load.checks, "alerts_fired": load.alerts_fired,
            },
            "verdicts": verdicts,
        }  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2, default=float), encoding="utf-8")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
