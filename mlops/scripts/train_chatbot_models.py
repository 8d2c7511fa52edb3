"""Train the chatbot models, evaluate them on held-out data and log every run to MLflow.

python mlops/scripts/train_chatbot_models.py [--models llm_model rag_model ...]
"""

from __future__ import annotations

import argparse

from mlops.cli import StepPrinter, exit_codes, setup_logging
from mlops.config import MODEL_KEYS, load_settings
from mlops.training import HEADLINE_METRICS, run_training


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODEL_KEYS, help="models to train (default: all four)")
    args = parser.parse_args(argv)
    with exit_codes():
        settings = load_settings()
        setup_logging(settings.training.log_level)
        steps = StepPrinter()
        results = run_training(settings, args.models, progress=steps)
        total = steps.done()
        print(f"\nTrained {len(results['models'])} model(s) in {total:.1f}s; MLflow run {results['run_id']}")
        for key, entry in results["models"].items():
            shown = ", ".join(f"{name}={entry['metrics'][name]:.3f}" for name in HEADLINE_METRICS[key])
            version = f"v{entry['version']}" if entry["version"] else "not registered"
            print(f"  {key:<16} {version:<8} {shown}")
        print(f"Results: {results['results_file']}")


if __name__ == "__main__":
    main()
