"""Wall-clock time of the launchers as a user runs them, each in a fresh, isolated store.

``python -m mlops.benchmarks.pipeline [--repeat 3]``

Each run is a subprocess (interpreter start-up included) with ``MLOPS_CONFIG_DIR`` pointing at a
temporary config folder whose every path (SQLite store, artifacts, models, results, logs) lies in
a temporary workspace, and with the ``MLFLOW_*`` and other override variables removed from its
environment, so nothing touches the project's own ``mlruns/`` or ``models/``. Per repeat:

1. cold full pipeline: ``python mlops_pipeline.py --no-launch`` in an empty workspace;
2. cold fast path: ``python simple_mlops.py`` in another empty workspace (trains everything);
3. warm fast path: ``python simple_mlops.py`` again there, nothing changed (reuse, no-op deploy);
4. deploy alone: ``python mlops/scripts/deploy_chatbot_models.py --force`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from mlops.config import CONFIG_DIR, ENV_OVERRIDES, PROJ_ROOT, Settings, load_settings

STEPS = {
    "cold_pipeline": ["mlops_pipeline.py", "--no-launch"],
    "cold_fast_path": ["simple_mlops.py"],
    "warm_fast_path": ["simple_mlops.py"],
    "deploy": ["mlops/scripts/deploy_chatbot_models.py", "--force"],
}
# what each command prints about its own duration (measured inside the process, start-up excluded)
INNER_TIME = {
    "warm_fast_path": re.compile(r"Fast path finished in ([\d.]+)s"),
    "cold_fast_path": re.compile(r"Fast path finished in ([\d.]+)s"),
    "deploy": re.compile(r"^\w[\w ]*: .*\(([\d.]+)s\)$", re.MULTILINE),
}
Progress = Callable[[str], None]


def isolated_config(root: Path) -> Settings:
    """Write the project's config into ``root/configs`` with every path inside ``root``; load it."""
    paths = {
        "mlflow_config.yaml": {"mlflow": {"tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db",
                                          "artifact_location": str(root / "mlruns" / "artifacts")}},
        "training_config.yaml": {"training": {"data_dir": str(PROJ_ROOT / "data"),
                                              "results_dir": str(root / "results")}},
        "deployment_config.yaml": {"deployment": {"models_dir": str(root / "models"),
                                                  "services_dir": str(root / "services")}},
        "monitoring_config.yaml": {"monitoring": {"inference_log": str(root / "inference_log.db"),
                                                  "alert_log": str(root / "alerts.log"),
                                                  "drift_reference_dir": str(root / "monitoring")}},
    }  # fmt: skip
    config_dir = root / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    for name, override in paths.items():
        data = yaml.safe_load((CONFIG_DIR / name).read_text(encoding="utf-8"))
        for section, values in override.items():
            data[section].update(values)
        (config_dir / name).write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_settings(config_dir, env={}, root=root)


def child_env(config_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment: our config folder; no MLflow or config override variables."""
    base = os.environ if base is None else base
    drop = set(ENV_OVERRIDES) | {"MLOPS_CONFIG_DIR"}
    env = {k: v for k, v in base.items() if not k.startswith("MLFLOW_") and k not in drop}
    return {**env, "MLOPS_CONFIG_DIR": str(config_dir), "MLFLOW_DISABLE_TELEMETRY": "true"}


@dataclass
class StepRun:
    step: str
    wall_s: float
    inner_s: float | None
    returncode: int
    output: str = field(repr=False, default="")


def run_step(step: str, config_dir: Path, timeout: float = 900.0) -> StepRun:
    """Run one launcher to completion and time it (wall clock, from fork to exit).

    Raises:
        RuntimeError: The command failed (its output's tail is in the message).
    """
    tic = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *STEPS[step]], cwd=PROJ_ROOT, env=child_env(config_dir), capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - tic
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(STEPS[step])} exited with {done.returncode}:\n{output[-2000:]}")
    match = INNER_TIME[step].search(done.stdout) if step in INNER_TIME else None
    return StepRun(step, wall, float(match.group(1)) if match else None, done.returncode, output)


def training_wall_s(results_dir: Path) -> tuple[float, dict]:
    """Training + MLflow logging seconds of the newest results JSON, and that JSON."""
    newest = sorted(Path(results_dir).glob("training_results_*.json"))[-1]
    results = json.loads(newest.read_text(encoding="utf-8"))
    started, finished = (datetime.fromisoformat(results[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds(), results


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def bench_pipeline(repeat: int, workdir: Path, progress: Progress | None = None) -> tuple[dict, Settings]:
    """``repeat`` rounds of the four steps; returns the figures and the last fast-path workspace's settings.

    The last workspace (a deployment made by the fast path, then redeployed) is left in ``workdir``
    for the serving benchmarks.
    """
    say = progress or (lambda message: None)
    runs: dict[str, list[StepRun]] = {step: [] for step in STEPS}
    training: list[float] = []
    results: dict = {}
    fast = None
    for i in range(repeat):
        cold = isolated_config(workdir / f"pipeline-{i}")
        say(f"round {i + 1}/{repeat}: cold full pipeline")
        runs["cold_pipeline"].append(run_step("cold_pipeline", cold.root / "configs"))
        seconds, results = training_wall_s(cold.training.results_dir)
        training.append(seconds)
        fast = isolated_config(workdir / f"fast-{i}")
        for step in ("cold_fast_path", "warm_fast_path", "deploy"):
            say(f"round {i + 1}/{repeat}: {step.replace('_', ' ')}")
            runs[step].append(run_step(step, fast.root / "configs"))
    figures = {
        step: {
            "wall": summary([r.wall_s for r in done]),
            "inner": summary([r.inner_s for r in done]) if all(r.inner_s is not None for r in done) else None,
        }
        for step, done in runs.items()
    }
    figures["training_with_logging"] = summary(training)
    figures["training_results"] = {
        key: {"training_time_s": entry["training_time_s"], "metrics": entry["metrics"]}
        for key, entry in results.get("models", {}).items()
    }
    figures["warm_reused_all"] = all("trained:" not in r.output for r in runs["warm_fast_path"])
    assert fast is not None
    return figures, fast


def main(argv: list[str] | None = None) -> None:
    from mlops.cli import StepPrinter, exit_codes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with exit_codes(), tempfile.TemporaryDirectory(prefix="mlops-pipeline-bench-") as tmp:
        figures, _ = bench_pipeline(args.repeat, Path(tmp), StepPrinter())
        print(json.dumps(figures, indent=2))  # noqa: T201 - the CLI's own output


if __name__ == "__main__":
    main()
