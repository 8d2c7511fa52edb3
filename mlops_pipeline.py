"""The full MLOps pipeline: checks, data validation, training and evaluation, gated deployment, then
the monitoring dashboard (:8502), the MLflow UI (:5000) and the chatbot UI (:8501), and a status report.

    python mlops_pipeline.py                # stays in the foreground; Ctrl+C stops the services it started
    python mlops_pipeline.py --detach       # leaves the services running (stop: python mlops_pipeline.py --stop)
    python mlops_pipeline.py --no-launch    # stops after the status report (CI, scripts)
    python mlops_pipeline.py --stop         # stops services left running detached, then exits

Exit codes: 0 done, 1 unexpected failure, 2 bad input, 3 a deployment gate refused (the last good
deployment keeps serving), 4 a service could not start, 130 interrupted.
"""

from __future__ import annotations

import argparse

from mlops import services
from mlops.cli import StepPrinter, exit_codes, setup_logging
from mlops.config import MODEL_KEYS, load_settings
from mlops.deployment import status_lines
from mlops.pipeline import run_pipeline
from mlops.training import HEADLINE_METRICS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODEL_KEYS, help="models to train (default: all four)")
    launch = parser.add_mutually_exclusive_group()
    launch.add_argument("--no-launch", action="store_true", help="do not start the services")
    launch.add_argument("--detach", action="store_true", help="leave the services running in the background")
    launch.add_argument("--stop", action="store_true", help="stop services left running detached and exit")
    args = parser.parse_args(argv)
    with exit_codes():
        settings = load_settings()
        setup_logging(settings.training.log_level)
        if args.stop:
            stopped = services.stop_all(settings)
            print(f"stopped: {', '.join(stopped)}" if stopped else "no service of this project was running")
            return
        if not args.no_launch:
            services.check_ports(settings)  # before minutes of work, not after (checked again at launch)
        steps = StepPrinter()
        result = run_pipeline(settings, steps, args.models)
        started = [] if args.no_launch else services.start_all(settings, progress=steps)
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
        print("\nServices:")
        print("\n".join(f"  {line}" for line in services.status_lines(settings)))
        print(f"  runs and registered models: {services.mlflow_runs_url(settings, result.experiment_id)}")
        print('\nAsk it:      .venv/bin/python -m mlops.chatbot "Where can I see leopards in Sri Lanka?"')
        if args.no_launch:
            print("Services not started (--no-launch); start them with: .venv/bin/python -m mlops.services start")
        elif args.detach:
            print("Services left running; stop them with: .venv/bin/python mlops_pipeline.py --stop")
        else:
            print("Press Ctrl+C to stop the services.", flush=True)
            services.wait_foreground(settings, started)


if __name__ == "__main__":
    main()
