"""The full MLOps pipeline: checks, data validation, training, evaluation, gated deployment, status.

    python mlops_pipeline.py [--models KEY ...]

Launching the monitoring dashboard, the MLflow UI and the chatbot UI is the next step of this
script (see the README's roadmap); today it stops after the status report.
"""

from __future__ import annotations

import argparse

from mlops.cli import StepPrinter, exit_codes, setup_logging
from mlops.config import MODEL_KEYS, load_settings
from mlops.deployment import status_lines
from mlops.pipeline import run_pipeline
from mlops.training import HEADLINE_METRICS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODEL_KEYS, help="models to train (default: all four)")
    args = parser.parse_args(argv)
    with exit_codes():
        settings = load_settings()
        setup_logging(settings.training.log_level)
        steps = StepPrinter()
        result = run_pipeline(settings, steps, args.models)
        total = steps.done()
        print(f"\nPipeline finished in {total:.1f}s")
        for name, detail in result.steps.items():
            print(f"  {name:<15} {detail}")
        print("\nModels (held-out test split):")
        for key, entry in result.training["models"].items():
            shown = ", ".join(f"{m}={entry['metrics'][m]:.3f}" for m in HEADLINE_METRICS[key])
            print(f"  {key:<16} v{entry['version']:<4} {shown}")
        print()
        print("\n".join(status_lines(settings.models_dir, history_rows=5)))
        print('Ask it:      .venv/bin/python -m mlops.chatbot "Where can I see leopards in Sri Lanka?"')
        print(f"\nBrowse runs: .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --workers 1")


if __name__ == "__main__":
    main()
