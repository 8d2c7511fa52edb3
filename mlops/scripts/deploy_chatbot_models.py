"""Deploy the newest registered models to models/ behind quality gates, or roll back.

    python mlops/scripts/deploy_chatbot_models.py [--force] [--dry-run]
    python mlops/scripts/deploy_chatbot_models.py --rollback
    python mlops/scripts/deploy_chatbot_models.py --status

Exit codes: 0 deployed / unchanged / rolled back, 2 bad input, 3 refused by a gate or a lock, 1 other failure.
"""

from __future__ import annotations

import argparse

from mlops.cli import StepPrinter, exit_codes, setup_logging
from mlops.config import load_settings
from mlops.deployment import deploy, rollback, status_lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--rollback", action="store_true", help="return to the previous deployment")
    action.add_argument(
        "--force",
        action="store_true",
        help="skip the champion comparison (never the gates); redeploy unchanged versions",
    )
    action.add_argument("--status", action="store_true", help="show what is live and the deployment history")
    parser.add_argument("--dry-run", action="store_true", help="validate and report; change nothing")
    args = parser.parse_args(argv)
    if args.rollback and args.dry_run:
        parser.error("--dry-run cannot be combined with --rollback")
    with exit_codes():
        settings = load_settings()
        setup_logging(settings.training.log_level)
        if args.status:
            print("\n".join(status_lines(settings.models_dir)))
            return
        steps = StepPrinter()
        if args.rollback:
            report = rollback(settings, steps)
        else:
            report = deploy(settings, force=args.force, dry_run=args.dry_run, progress=steps)
        steps.done()
        print(f"\n{report.outcome.replace('_', ' ')}: {report.reason} ({report.seconds:.1f}s)")
        for key, entry in (report.manifest or {}).get("models", {}).items():
            metrics = ", ".join(f"{name}={value:.3f}" for name, value in entry.get("metrics", {}).items())
            print(f"  {key:<16} v{entry['version']:<4} {metrics}")


if __name__ == "__main__":
    main()
