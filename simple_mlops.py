"""The fast path: no prompts; train only what changed, reuse the rest, deploy, print a summary.

    python simple_mlops.py [--force]

A model is retrained only when its data, its config or the code that trains it changed; otherwise
the registered version trained from the same inputs is reused (recorded in MLflow as tags).
"""

from __future__ import annotations

import argparse

from mlops.cli import StepPrinter, exit_codes, setup_logging
from mlops.config import load_settings
from mlops.deployment import status_lines
from mlops.pipeline import run_fast_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="retrain every model even if nothing changed")
    args = parser.parse_args(argv)
    with exit_codes():
        settings = load_settings()
        setup_logging(settings.training.log_level)
        steps = StepPrinter()
        result = run_fast_path(settings, steps, force=args.force)
        total = steps.done()
        print(f"\nFast path finished in {total:.1f}s (MLflow run {result.run_id})")
        for key, version in result.reused.items():
            print(f"  {key:<16} v{version:<4} reused: data, config and code unchanged")
        for key, version in result.trained.items():
            print(f"  {key:<16} v{version:<4} trained: its inputs changed")
        print(f"Deployment: {result.deployment.outcome} ({result.deployment.reason})\n")
        print("\n".join(status_lines(settings.models_dir, history_rows=3)))


if __name__ == "__main__":
    main()
