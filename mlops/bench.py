"""Benchmarks: ``python -m mlops.bench [--repeat N]`` (what ``make bench`` runs).

In a fresh temporary store, N times: trains all four models with MLflow logging, then deploys them
through the gates. Then, in a clean subprocess that imports only the serving code: load time, query
latency with the inference log on, throughput and RSS. Then the intent and few-shot models on
CLINC150 (:mod:`mlops.benchmarks.clinc150`; skipped with a note when the data is absent). Writes
``docs/BENCHMARKS.md`` with the command, machine and date of every figure, keeping its hand-written
"Attempts" section (between the ``ATTEMPTS_START`` and ``ATTEMPTS_END`` markers) as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mlops.cli import exit_codes, setup_logging
from mlops.config import CONFIG_DIR, PROJ_ROOT, load_settings
from mlops.training import HEADLINE_METRICS, run_training

DOCS = PROJ_ROOT / "docs" / "BENCHMARKS.md"
ATTEMPTS_START, ATTEMPTS_END = "<!-- attempts:start -->", "<!-- attempts:end -->"


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), cpu
        )
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def isolated_settings(root: Path):
    """The project's config with every store and output redirected into ``root``."""
    config_dir = root / "configs"
    config_dir.mkdir()
    for path in CONFIG_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        if "mlflow" in data:
            data["mlflow"].update(
                tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db", artifact_location=str(root / "art")
            )
        if "training" in data:
            data["training"].update(results_dir=str(root / "results"), data_dir=str(PROJ_ROOT / "data"))
        (config_dir / path.name).write_text(yaml.safe_dump(data))
    return load_settings(config_dir, env={}, root=root)


def bench_training(repeat: int) -> tuple[list[float], list[float], list[float], dict, dict]:
    """Train + deploy ``repeat`` times in fresh stores; time the warm fast path; probe serving."""
    train_times, deploy_times, warm_times, results, serving = [], [], [], {}, {}
    from mlops.deployment import deploy
    from mlops.pipeline import run_fast_path

    for i in range(repeat):
        with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
            settings = isolated_settings(Path(tmp))
            tic = time.perf_counter()
            results = run_training(settings)
            train_times.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            deploy(settings)
            deploy_times.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            run_fast_path(settings, lambda message: None)  # nothing changed: reuse and a no-op deploy
            warm_times.append(time.perf_counter() - tic)
            if i == repeat - 1:
                serving = run_probe(settings.models_dir, Path(tmp) / "inference.db")
                serving["deployed_mb"] = sum(f.stat().st_size for f in settings.models_dir.rglob("*.pkl")) / 2**20
    return train_times, deploy_times, warm_times, results, serving


def run_probe(models_dir: Path, log_path: Path, n: int = 2000) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "mlops.serving_probe", str(models_dir), str(log_path), str(n)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_clinc(settings_names: list[str], few_shot: bool = True) -> tuple[list[dict], float, str]:
    """The CLINC150 benchmark: its rows and seconds, or no rows and the reason it was skipped."""
    from mlops.benchmarks import clinc150
    from mlops.config import load_settings

    data_dir = clinc150.resolve_data_dir()
    if not (data_dir / clinc150.FILES["full"]).is_file():
        return [], 0.0, clinc150.missing_message(data_dir)
    tic = time.perf_counter()
    rows = clinc150.run_benchmark(data_dir, load_settings(), settings_names, few_shot)
    return rows, time.perf_counter() - tic, ""


def render_clinc(rows: list[dict], seconds: float, skipped: str, command: str) -> str:
    from mlops.benchmarks import clinc150

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["## Intent model on CLINC150", ""]
    if skipped:
        return "\n".join([*lines, skipped, ""])
    full = {row["method"]: row for row in rows if row["setting"] == "full" and row["method"] in clinc150.METHODS}
    lines += [
        f"Measured {when} on {machine()} with `{command}` ({seconds:.0f} s in all).",
        "",
        "The intent model is built by the same code with the same `llm_model` settings as the deployed one;",
        "trained on CLINC150's train",
        "split (plus `oos_train` for oos-train), its out-of-scope threshold tuned on val only, scored once on",
        "test. In-scope accuracy over the 150 intents and out-of-scope recall on the 1,000 `oos_test`",
        "queries, in %. Training time covers fit + threshold tuning (Full / Small); serving size is the",
        "pickled numpy twin that would be deployed. Paper rows: Larson et al., EMNLP 2019, Table 2.",
        "",
        clinc150.render_table(rows),
    ]
    if "oos-train" in full:
        row = full["oos-train"]
        met = row["in_scope_accuracy"] >= 0.95 and row["oos_recall"] >= 0.55 and row["train_s"] <= 120
        lines += [
            f"Target on Full (oos-train): in-scope accuracy ≥ 95.0, OOS recall ≥ 55.0, training ≤ 120 s — "
            f"measured {100 * row['in_scope_accuracy']:.1f} / {100 * row['oos_recall']:.1f} / "
            f"{row['train_s']:.0f} s: {'met' if met else 'not met'}.",
            "",
        ]
    few = clinc150.render_few_shot(rows)
    if few:
        lines += [
            "Few-shot model on Full: an embedding model trained from scratch by the project's embedding trainer",
            "on 16 labelled examples per intent (the tokenizer and character TF-IDF see the whole train split",
            "unlabelled), prototypes from k examples per intent (mean of the config's draws), in-scope test",
            "accuracy over the 150 intents (no out-of-scope):",
            "",
            few,
        ]
    return "\n".join(lines)


def kept_attempts(path: Path) -> str:
    """The hand-maintained Attempts section of the existing file, markers included ("" when none)."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(ATTEMPTS_START), text.find(ATTEMPTS_END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(ATTEMPTS_END)] + "\n"


def render(times, deploy_times, warm_times, results: dict, serving: dict, command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Measured {when} on {machine()} with `{command}`.",
        "",
        "## Training all four models plus MLflow logging (fresh SQLite store each run)",
        "",
        "| runs | median (s) | min (s) | max (s) | target |",
        "| --- | --- | --- | --- | --- |",
        f"| {len(times)} | {statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f} | ≤ 90 s |",
        "",
        "Per model (last run, seconds to train, excluding logging):",
        "",
        "| model | train time (s) | held-out metrics |",
        "| --- | --- | --- |",
    ]
    for key, entry in results["models"].items():
        shown = ", ".join(f"{m} {entry['metrics'][m]:.3f}" for m in HEADLINE_METRICS[key])
        lines.append(f"| {key} | {entry['training_time_s']:.1f} | {shown} |")
    lines += [
        "",
        "## Deployment (validation, gates, release, manifest, travel_chatbot registration)",
        "",
        "| runs | median (s) | min (s) | max (s) | target |",
        "| --- | --- | --- | --- | --- |",
        f"| {len(deploy_times)} | {statistics.median(deploy_times):.2f} | {min(deploy_times):.2f} | "
        f"{max(deploy_times):.2f} | ≤ 5 s |",
        "",
        "## Fast path with nothing changed (`simple_mlops.py`: fingerprints, reuse, no-op deploy)",
        "",
        "| runs | median (s) | min (s) | max (s) | target |",
        "| --- | --- | --- | --- | --- |",
        f"| {len(warm_times)} | {statistics.median(warm_times):.2f} | {min(warm_times):.2f} | "
        f"{max(warm_times):.2f} | ≤ 10 s |",
        "",
        "## Serving in-process (fresh process, inference log on, 2,000 queries, 1 thread)",
        "",
        "| figure | measured | target |",
        "| --- | --- | --- |",
        f"| `TravelChatbot.load()` | {serving['load_s']:.3f} s | ≤ 1 s |",
        f"| `process_query` p50 | {serving['p50_ms']:.2f} ms | ≤ 2 ms |",
        f"| `process_query` p95 | {serving['p95_ms']:.2f} ms | – |",
        f"| `process_query` p99 | {serving['p99_ms']:.2f} ms | ≤ 10 ms |",
        f"| throughput | {serving['qps_1_thread']:.0f} queries/s | – |",
        f"| process RSS after the run | {serving['rss_mb']:.0f} MB | ≤ 250 MB |",
        f"| deployed model files | {serving['deployed_mb']:.1f} MB | ≤ 50 MB |",
        f"| rows in the inference log | {serving['logged_rows']} | every query |",
        f"| torch / scikit-learn imported | {serving['torch_loaded']} / {serving['sklearn_loaded']} | False |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="training runs to time (default 3)")
    parser.add_argument("--output", type=Path, default=DOCS, help="markdown file to write")
    parser.add_argument("--clinc-settings", nargs="*", default=["full", "small"], help="CLINC150 settings ('' skips)")
    args = parser.parse_args(argv)
    with exit_codes():
        setup_logging("WARNING")
        times, deploy_times, warm_times, results, serving = bench_training(args.repeat)
        command = f"python -m mlops.bench --repeat {args.repeat}"
        text = render(times, deploy_times, warm_times, results, serving, command)
        names = [name for name in args.clinc_settings if name]
        if names:
            rows, seconds, skipped = bench_clinc(names)
            clinc_command = f"python -m mlops.benchmarks.clinc150 --settings {' '.join(names)}"
            text += "\n" + render_clinc(rows, seconds, skipped, clinc_command)
        attempts = kept_attempts(args.output)
        if attempts:
            text += "\n" + attempts
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(text)


if __name__ == "__main__":
    main()
