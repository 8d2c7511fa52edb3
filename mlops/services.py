"""Start, health-check and stop the services the launchers run: dashboard, MLflow UI, chat UI, and
the monitor (the alert-check loop, ``python -m mlops.monitoring check --loop``).

    python -m mlops.services start [NAME ...] [--detach]    # foreground: Ctrl+C stops them
    python -m mlops.services stop [NAME ...]                # stop services left running detached
    python -m mlops.services status

Each service runs in its own process group with its output in ``<services_dir>/<name>.log``; a
JSON state file beside it records the PID, the process start time (so a recycled PID is never
mistaken for ours), the URL and the command. Everything binds 127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from mlops.config import PROJ_ROOT, Settings
from mlops.processes import process_alive

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0


class ServiceError(RuntimeError):
    """A service could not start (port in use, crashed, never became healthy) or stop."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and how to tell it is up."""

    name: str
    title: str
    host: str
    port: int | None  # None: a background worker, healthy while its process runs
    command: tuple[str, ...]
    health_path: str
    config_hint: str  # where its port is configured, for the port-in-use message

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}" if self.port else ""

    @property
    def health_url(self) -> str:
        return self.url + self.health_path if self.port else ""


@dataclass(frozen=True)
class ServiceState:
    """What the state file of a started service records."""

    name: str
    title: str
    pid: int
    create_time: float
    url: str
    health_url: str
    started_at: str
    log: str
    command: list[str]


def _streamlit(run: tuple[str, ...], host: str, port: int, python: str) -> tuple[str, ...]:
    """``run`` is what follows ``python``: ``-m streamlit run <script>``, or a module that ends up there."""
    return (
        python, *run,
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    )  # fmt: skip


def tracking_server(settings: Settings) -> str | None:
    """The MLflow tracking server's URL when the store is one (team profile): it serves the UI itself."""
    uri = settings.tracking_uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def service_specs(settings: Settings, python: str = sys.executable) -> dict[str, ServiceSpec]:
    """The services of the toolkit, in start order, keyed by name.

    With a tracking server (team profile) there is no local MLflow UI: the server is the UI.
    """
    monitoring, mlflow_settings, deployment = settings.monitoring, settings.mlflow, settings.deployment
    specs = [
        ServiceSpec(
            "dashboard", "Monitoring dashboard", monitoring.host, monitoring.port,
            _streamlit(("-m", "mlops.dashboards.serve"), monitoring.host, monitoring.port, python),  # warm start
            "/_stcore/health", "monitoring.port in monitoring_config.yaml",
        ),
        ServiceSpec(
            "mlflow_ui", "MLflow UI", mlflow_settings.ui_host, mlflow_settings.ui_port,
            (python, "-m", "mlflow", "ui", "--backend-store-uri", settings.tracking_uri,
             "--host", mlflow_settings.ui_host, "--port", str(mlflow_settings.ui_port), "--workers", "1"),
            "/health", "mlflow.ui_port in mlflow_config.yaml",
        ),
        ServiceSpec(
            "chatbot", "Chatbot UI", deployment.chatbot_host, deployment.chatbot_port,
            _streamlit(("-m", "streamlit", "run", str(PROJ_ROOT / "mlops/chatbot/app.py")),
                       deployment.chatbot_host, deployment.chatbot_port, python),
            "/_stcore/health", "deployment.chatbot_port in deployment_config.yaml",
        ),
        ServiceSpec(
            "monitor", "Alert monitor", "", None,
            (python, "-m", "mlops.monitoring", "check", "--loop"), "", "",
        ),
    ]  # fmt: skip
    if tracking_server(settings):
        specs = [spec for spec in specs if spec.name != "mlflow_ui"]
    return {spec.name: spec for spec in specs}


def select(settings: Settings, names: Iterable[str] | None) -> list[ServiceSpec]:
    """The specs named (all of them for None), with a clear error for an unknown name."""
    specs = service_specs(settings)
    names = list(names or specs)
    if "mlflow_ui" in names and "mlflow_ui" not in specs:
        raise ValueError(
            f"no local MLflow UI in the team profile: the tracking server {tracking_server(settings)} is the UI"
        )
    unknown = [name for name in names if name not in specs]
    if unknown:
        raise ValueError(f"unknown service {', '.join(unknown)}; choose from {', '.join(specs)}")
    return [specs[name] for name in names]


# ------------------------------------------------------------------ state files
def _state_path(settings: Settings, name: str) -> Path:
    return settings.services_dir / f"{name}.json"


def read_state(settings: Settings, name: str) -> ServiceState | None:
    """The recorded state of ``name`` if its process is still the one we started, else None.

    A state file whose process is gone (or whose PID now belongs to another process) is stale
    and is removed.
    """
    path = _state_path(settings, name)
    try:
        state = ServiceState(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        logger.warning("%s: unreadable service state (%s); ignoring it", path, exc)
        path.unlink(missing_ok=True)
        return None
    if _alive(state):
        return state
    path.unlink(missing_ok=True)
    return None


def _alive(state: ServiceState) -> bool:
    return process_alive(state.pid, state.create_time)


def _write_state(settings: Settings, state: ServiceState) -> None:
    path = _state_path(settings, state.name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------ ports and health
def port_holder(host: str, port: int) -> str | None:
    """None if ``host:port`` is free to listen on, else a description of what holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers do: a port whose last connections linger in TIME_WAIT is free to listen on
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    process = psutil.Process(conn.pid)
                    command = " ".join(process.cmdline())[:120] or process.name()
                except psutil.Error:
                    command = "?"
                return f"pid {conn.pid} ({command})"
    except psutil.AccessDenied:
        pass
    return f"another process (not visible to this user; `ss -ltnp 'sport = :{port}'` shows it)"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers HTTP 200 (a worker without a URL counts as healthy while it runs)."""
    if not url:
        return True
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status == 200
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------ start / stop
def start(
    settings: Settings,
    spec: ServiceSpec,
    timeout: float = START_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> tuple[ServiceState, bool]:
    """Start ``spec`` in its own process group and wait until its health endpoint answers.

    Returns:
        ``(state, started)``: ``started`` is False when our own instance was already running and healthy.

    Raises:
        ServiceError: The port is held by something else, or the service exited or never became healthy
            (its process group is stopped and its log tail is in the message).
    """
    existing = read_state(settings, spec.name)
    if existing is not None:
        if healthy(existing.health_url):
            return existing, False
        stop_state(settings, existing)
    holder = port_holder(spec.host, spec.port) if spec.port else None
    if holder:
        raise ServiceError(
            f"{spec.title}: port {spec.port} on {spec.host} is in use by {holder}; "
            f"stop it or choose another port ({spec.config_hint})"
        )
    settings.services_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.services_dir / f"{spec.name}.log"
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    child_env["PATH"] = f"{Path(spec.command[0]).parent}{os.pathsep}{child_env.get('PATH', '')}"
    with open(log_path, "ab") as log:
        log.write(f"\n--- {datetime.now(UTC).isoformat()} starting: {' '.join(spec.command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            spec.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=settings.root, env=child_env, start_new_session=True,
        )  # fmt: skip
    state = ServiceState(
        name=spec.name, title=spec.title, pid=process.pid, create_time=psutil.Process(process.pid).create_time(),
        url=spec.url, health_url=spec.health_url, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        log=str(log_path), command=list(spec.command),
    )  # fmt: skip
    _write_state(settings, state)
    deadline = time.monotonic() + timeout
    if not spec.port:  # a worker: up if it survives its start-up (imports, config, database)
        time.sleep(2.0)
    while not healthy(spec.health_url) or process.poll() is not None:
        if process.poll() is not None:
            _state_path(settings, spec.name).unlink(missing_ok=True)
            raise ServiceError(
                f"{spec.title} exited with code {process.returncode} before answering {spec.health_url}; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop_state(settings, state)
            raise ServiceError(
                f"{spec.title} did not answer {spec.health_url} within {timeout:.0f}s; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.25)
    return state, True


def stop_state(settings: Settings, state: ServiceState, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop a started service and every process of its group: SIGTERM, then SIGKILL after ``timeout``.

    Returns:
        True if a process was stopped, False if it was already gone.
    """
    return bool(stop_states(settings, [state], timeout))


def stop_states(
    settings: Settings, states: Iterable[ServiceState], timeout: float = STOP_TIMEOUT_S
) -> list[ServiceState]:
    """Stop several services together: SIGTERM to every one, one shared wait, then SIGKILL to what is left.

    Ctrl+C therefore takes at most ``timeout`` + 5 s however many services run, not that per service.

    Returns:
        The states that still had a live process (the ones actually stopped).
    """
    families: list[tuple[ServiceState, list[psutil.Process]]] = []
    for state in states:
        _state_path(settings, state.name).unlink(missing_ok=True)
        if not _alive(state):
            continue
        try:
            leader = psutil.Process(state.pid)
            families.append((state, [leader, *leader.children(recursive=True)]))
        except psutil.Error:
            continue
    remaining = families
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for state, family in remaining:
            try:
                os.killpg(state.pid, sig)  # the group the service leads (start_new_session)
            except (ProcessLookupError, PermissionError):
                pass
            for process in family:  # children that left the group still get the signal
                try:
                    process.send_signal(sig)
                except psutil.Error:
                    pass
        everyone = [process for _, family in remaining for process in family]
        _, alive = psutil.wait_procs(everyone, timeout=timeout if sig == signal.SIGTERM else 5)
        remaining = [(state, [p for p in family if p in alive]) for state, family in remaining]
        remaining = [(state, family) for state, family in remaining if family]
        if not remaining:
            break
    for state, _ in families:  # reap our own children so they do not linger as zombies
        try:
            os.waitpid(state.pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return [state for state, _ in families]


def check_ports(settings: Settings, names: Iterable[str] | None = None) -> None:
    """Fail if a port of the named services (all by default) is held by anything but that service.

    Raises:
        ServiceError: Each busy port, with the process holding it and the config key that moves it.
    """
    holders = [
        f"{spec.title}: port {spec.port} on {spec.host} is in use by {holder}; "
        f"stop it or choose another port ({spec.config_hint})"
        for spec in select(settings, names)
        if spec.port and read_state(settings, spec.name) is None and (holder := port_holder(spec.host, spec.port))
    ]
    if holders:
        raise ServiceError("\n".join(holders))


def start_all(
    settings: Settings,
    names: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> list[tuple[ServiceState, bool]]:
    """Start the named services (all by default) in order; on a failure stop those started here.

    Raises:
        ServiceError: Every service that failed, one reason a line.
    """
    specs = select(settings, names)
    check_ports(settings, names)  # report every busy port before starting anything
    started: list[tuple[ServiceState, bool]] = []
    try:
        for spec in specs:
            if progress:
                progress(f"Starting {spec.title}" + (f" on {spec.url}" if spec.url else ""))
            started.append(start(settings, spec, timeout=timeout))
    except BaseException:
        stop_started(settings, started)
        raise
    return started


def stop_started(settings: Settings, started: Iterable[tuple[ServiceState, bool]]) -> None:
    """Stop the services this process started (not the ones it found running)."""
    stop_states(settings, [state for state, was_started in reversed(list(started)) if was_started])


def stop_all(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Stop running services (all by default), detached or not. Returns the titles stopped."""
    states = [state for spec in select(settings, names) if (state := read_state(settings, spec.name)) is not None]
    return [state.title for state in stop_states(settings, states)]


def status(settings: Settings) -> list[dict]:
    """One row per service: name, title, url, state (running/unhealthy/stopped), pid."""
    rows = []
    for spec in service_specs(settings).values():
        state = read_state(settings, spec.name)
        if state is None:
            rows.append({"name": spec.name, "title": spec.title, "url": spec.url, "state": "stopped", "pid": None})
        else:
            running = "running" if healthy(state.health_url, timeout=1.0) else "unhealthy"
            rows.append({"name": spec.name, "title": spec.title, "url": state.url, "state": running, "pid": state.pid})
    return rows


def mlflow_runs_url(settings: Settings, experiment_id: str) -> str:
    """Where the MLflow UI lists the experiment's runs (MLflow 3 opens on its GenAI view otherwise)."""
    base = tracking_server(settings) or service_specs(settings)["mlflow_ui"].url
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def status_lines(settings: Settings) -> list[str]:
    lines = []
    for row in status(settings):
        pid = f"pid {row['pid']}" if row["pid"] else ""
        where = row["url"] or f"checks alerts every {settings.monitoring.interval_seconds}s"
        if row["state"] == "stopped" and row["url"]:  # not serving: the address is where it would start
            where = f"(would serve {row['url']})"
        lines.append(f"{row['title']:<22} {row['state']:<10} {where:<24} {pid}".rstrip())
    if server := tracking_server(settings):
        lines.insert(1, f"{'MLflow UI':<22} {'server':<10} {server}  (the team's tracking server)")
    return lines


def wait_foreground(settings: Settings, started: list[tuple[ServiceState, bool]], poll: float = 1.0) -> None:
    """Stay in the foreground until Ctrl+C (or SIGTERM), then stop the services started here.

    A service that dies on its own is reported once; the wait ends when none is left.
    """

    def _terminate(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    watched = [state for state, _ in started]
    try:
        while watched:
            time.sleep(poll)
            for state in list(watched):
                if not _alive(state):
                    print(f"{state.title} stopped on its own; see {state.log}", file=sys.stderr, flush=True)
                    watched.remove(state)
                    _state_path(settings, state.name).unlink(missing_ok=True)
    except KeyboardInterrupt:
        print("\nStopping services ...", flush=True)
    finally:
        stop_started(settings, started)
        signal.signal(signal.SIGTERM, previous)
    print("All services started here are stopped.", flush=True)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from mlops.cli import exit_codes, setup_logging
    from mlops.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("names", nargs="*", help="dashboard, mlflow_ui, chatbot, monitor (default: all)")
    parser.add_argument("--detach", action="store_true", help="leave the services running and return")
    args = parser.parse_args(argv)
    with exit_codes():
        settings = load_settings()
        setup_logging(settings.training.log_level)
        if args.action == "status":
            print("\n".join(status_lines(settings)))
        elif args.action == "stop":
            stopped = stop_all(settings, args.names)
            print(f"stopped: {', '.join(stopped)}" if stopped else "no service of this project was running")
        else:
            started = start_all(settings, args.names, progress=lambda message: print(f"→ {message} ...", flush=True))
            for state, was_started in started:
                note = "" if was_started else " (was already running)"
                print(f"  {state.title:<22} {state.url or 'background'}  pid {state.pid}{note}", flush=True)
            if args.detach:
                print("Running detached; stop them with: python -m mlops.services stop", flush=True)
            else:
                print("Press Ctrl+C to stop them.", flush=True)
                wait_foreground(settings, started)


if __name__ == "__main__":
    from mlops.services import main as _main  # the module's own classes, not __main__'s copies

    _main()
