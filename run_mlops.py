"""Interactive menu of the MLOps steps; works at a terminal and with piped input.

python run_mlops.py                 # then pick 1-6
printf '5\n6\n' | python run_mlops.py
"""

from __future__ import annotations

import sys

from mlops.cli import StepPrinter, setup_logging
from mlops.config import ConfigError, load_settings

MENU = """
Travel chatbot MLOps
  1. Run complete MLOps pipeline
  2. Train models only
  3. Deploy models only
  4. Launch monitoring dashboard
  5. Check system status
  6. Exit"""


def run_choice(choice: str, settings) -> None:
    """Run one menu entry; errors are reported and the menu goes on."""
    from mlops.cli import Refused
    from mlops.deployment import deploy
    from mlops.pipeline import run_pipeline
    from mlops.services import ServiceError
    from mlops.status import status_report
    from mlops.training import run_training

    steps = StepPrinter()
    try:
        if choice == "1":
            result = run_pipeline(settings, steps)
            print(f"pipeline done: {result.steps['deployment']}")
        elif choice == "2":
            results = run_training(settings, progress=steps)
            print(f"trained {', '.join(results['models'])}; results in {results['results_file']}")
        elif choice == "3":
            report = deploy(settings, progress=steps)
            print(f"{report.outcome}: {report.reason}")
        elif choice == "4":
            from mlops import services

            [(state, started)] = services.start_all(settings, ["dashboard"], progress=steps)
            print(f"Monitoring dashboard {'started' if started else 'already running'}: {state.url} (pid {state.pid})")
            print("It keeps running after the menu exits; stop it with: python -m mlops.services stop dashboard")
        elif choice == "5":
            print("\n".join(status_report(settings)))
    except Refused as exc:
        print(f"refused: {exc}")
    except ServiceError as exc:
        print(f"error: {exc}")
    except Exception as exc:  # the menu stays up: report the failed step and let the user pick again
        print(f"failed: {type(exc).__name__}: {exc}")
    finally:
        steps.done()


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.training.log_level)
    while True:
        print(MENU)
        try:
            choice = input("Choose 1-6: ").strip()
        except EOFError:
            print()
            return 0
        if choice == "6":
            return 0
        if choice not in {"1", "2", "3", "4", "5"}:
            print(f"'{choice}' is not a choice: type a number from 1 to 6")
            continue
        run_choice(choice, settings)


if __name__ == "__main__":
    sys.exit(main())
