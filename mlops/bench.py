"""Benchmarks: ``python -m mlops.bench [--repeat N]`` (what ``make bench`` runs).

Trains all four models plus MLflow logging in a fresh temporary store, N times, and writes the
wall-clock times and held-out metrics to ``docs/BENCHMARKS.md`` with the command, machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mlops.cli import exit_codes, setup_logging
from mlops.config import CONFIG_DIR, PROJ_ROOT, load_settings
from mlops.training import HEADLINE_METRICS, run_training

DOCS = PROJ_ROOT / "docs" / "BENCHMARKS.md"


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


def bench_training(repeat: int) -> tuple[list[float], dict]:
    times, results = [], {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
            settings = isolated_settings(Path(tmp))
            tic = time.perf_counter()
            results = run_training(settings)
            times.append(time.perf_counter() - tic)
    return times, results


def render(times: list[float], results: dict, command: str) -> str:
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="training runs to time (default 3)")
    parser.add_argument("--output", type=Path, default=DOCS, help="markdown file to write")
    args = parser.parse_args(argv)
    with exit_codes():
        setup_logging("WARNING")
        times, results = bench_training(args.repeat)
        text = render(times, results, f"python -m mlops.bench --repeat {args.repeat}")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(text)


if __name__ == "__main__":
    main()
