"""Monitoring from the command line.

    python -m mlops.monitoring check [--loop] [--no-collect]   alert rules: table of rule, value, threshold, state
    python -m mlops.monitoring metrics                         Prometheus text exposition, once
    python -m mlops.monitoring serve-metrics [--port N]        /metrics on 127.0.0.1 until Ctrl+C
    python -m mlops.monitoring canary                          run the golden queries now
    python -m mlops.monitoring sample                          one system-health sample
    python -m mlops.monitoring drift [--minutes 60]            drift of the last window vs the deployment

Exit codes of ``check``: 0 no alert open, 1 an alert is open, 2 bad configuration or data,
4 the check itself failed (database unreachable...); ``check --loop`` exits 0 when stopped by
Ctrl+C or SIGTERM. The other commands: 0 done, 2 bad configuration, data or nothing deployed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import UTC, datetime

from mlops.chatbot.bot import DeploymentError
from mlops.cli import EXIT_BAD_INPUT, exit_codes, setup_logging
from mlops.config import ConfigError, Settings, load_settings
from mlops.data import DataValidationError

EXIT_CHECK_FAILED = 4


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from mlops.monitoring import alerts

    if not args.loop:
        results = alerts.check(settings, collect_first=not args.no_collect)
        print("\n".join(alerts.format_results(results)))
        return alerts.exit_code(results)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def show(results) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        print(f"== {stamp}\n" + "\n".join(alerts.format_results(results)), flush=True)

    print(f"checking every {settings.monitoring.interval_seconds}s; Ctrl+C stops", file=sys.stderr)
    try:
        alerts.loop(settings, stop, on_result=show)
    except KeyboardInterrupt:
        pass
    print("stopped", file=sys.stderr)
    return 0


def _serve_metrics(settings: Settings, args: argparse.Namespace) -> int:
    from mlops.monitoring.prometheus import serve

    server, _ = serve(settings, port=args.port, host=args.host)
    host, port = server.server_address[:2]
    print(f"serving http://{host}:{port}/metrics; Ctrl+C stops", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def _drift(settings: Settings, args: argparse.Namespace) -> int:
    from mlops.monitoring import stats
    from mlops.monitoring.drift import deployed_encoder, drift_report, reference_profile
    from mlops.monitoring.inference_log import read_log

    now = time.time()
    live = stats.window(read_log(settings.inference_log_url, since=now - args.minutes * 60), args.minutes, now)
    report = drift_report(reference_profile(settings), live, deployed_encoder(settings))
    print(f"{len(live)} live queries in the last {args.minutes} min vs the deployment of {report.deployed_at}")
    for row in report.rows:
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        flag = "DRIFTED" if row["drifted"] else "ok"
        print(f"  {row['signal']:<16} score {score:>7} (threshold {row['threshold']:.2f}) {flag}  {row['detail']}")
    print(f"overall score {report.score:.2f} ({'drifted' if report.drifted else 'no drift'})")
    return 0


def _canary(settings: Settings, args: argparse.Namespace) -> int:
    from mlops.monitoring.canary import run_canary

    row = run_canary(settings)
    shown = {key: row[key] for key in ("accuracy", "oos_recall", "hit_at_3", "n", "n_retrieval", "p95_latency_ms")}
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return 0


def _sample(settings: Settings, args: argparse.Namespace) -> int:
    from mlops.monitoring.system import sample

    row = sample(settings)
    print(
        f"cpu {row['cpu_percent']:.0f}% · memory {row['memory_percent']:.0f}% · disk {row['disk_percent']:.0f}% · "
        f"{row['serving_processes']} serving process(es), {row['serving_rss_mb']:.0f} MB RSS"
    )
    return 0


def _metrics(settings: Settings, args: argparse.Namespace) -> int:
    from mlops.monitoring.prometheus import render

    sys.stdout.write(render(settings).decode("utf-8"))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlops.monitoring", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1],
    )  # fmt: skip
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="evaluate the alert rules (exit 1 when an alert is open)")
    check.add_argument("--loop", action="store_true", help="check every interval_seconds until Ctrl+C")
    check.add_argument("--no-collect", action="store_true", help="do not sample the machine or run a due canary")
    check.set_defaults(handler=_check)
    commands.add_parser("metrics", help="print the Prometheus metrics").set_defaults(handler=_metrics)
    serve = commands.add_parser("serve-metrics", help="serve /metrics until Ctrl+C")
    serve.add_argument("--port", type=int, default=None, help="default: monitoring.metrics_port")
    serve.add_argument("--host", default=None, help="default: monitoring.metrics_host (127.0.0.1)")
    serve.set_defaults(handler=_serve_metrics)
    commands.add_parser("canary", help="run the golden queries now").set_defaults(handler=_canary)
    commands.add_parser("sample", help="store one system-health sample").set_defaults(handler=_sample)
    drift = commands.add_parser("drift", help="drift of the last window against the deployment")
    drift.add_argument("--minutes", type=int, default=60, help="window length (default 60)")
    drift.set_defaults(handler=_drift)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.log_level)
    with exit_codes():
        settings = load_settings()
        if args.command != "check":
            sys.exit(args.handler(settings, args))
        try:
            code = args.handler(settings, args)
        except (ConfigError, DataValidationError, DeploymentError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = EXIT_BAD_INPUT
        except Exception as exc:  # 1 means "an alert is open": a broken check must not look like one
            print(f"check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = EXIT_CHECK_FAILED
        sys.exit(code)


if __name__ == "__main__":
    main()
