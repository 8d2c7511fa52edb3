"""The "system status" view: deployment, last training, tracking store, machine health."""

from __future__ import annotations

import json
from pathlib import Path

from mlops import services, team
from mlops.config import Settings
from mlops.deployment import status_lines


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def last_training(results_dir: Path) -> dict | None:
    """The newest ``training_results_*.json``, or None."""
    files = sorted(results_dir.glob("training_results_*.json"))
    return json.loads(files[-1].read_text(encoding="utf-8")) if files else None


def status_report(settings: Settings) -> list[str]:
    """Lines of the status view (no training imports; the network only to check the team profile's services)."""
    import psutil

    lines = ["== Deployment", *status_lines(settings.models_dir, history_rows=5), "", "== Last training"]
    results = last_training(settings.results_dir)
    if results is None:
        lines.append(f"no training results in {settings.results_dir}; run option 2 (train)")
    else:
        lines.append(f"started {results['started_at']}, MLflow run {results.get('run_id')}")
        for key, entry in results["models"].items():
            shown = ", ".join(f"{k}={v:.3f}" for k, v in entry["metrics"].items() if not k.endswith("_std"))
            lines.append(f"  {key:<16} v{entry.get('version')}: {shown}")
    lines += ["", "== Services", *services.status_lines(settings)]
    lines.append("start: python -m mlops.services start [--detach] · stop detached ones: python -m mlops.services stop")
    lines += ["", "== Profile", *team.status_lines(settings)]
    uri = settings.tracking_uri
    lines += ["", "== Tracking store", f"tracking URI: {team.hide_password(uri)}"]
    if uri.startswith("sqlite:///"):  # a server or a database reports its own size
        store = Path(uri[len("sqlite:///") :]).parent
        lines.append(f"store folder {store}: {_folder_size(store) / 2**20:.1f} MB")
    disk = psutil.disk_usage(str(settings.root))
    memory = psutil.virtual_memory()
    lines += [
        "",
        "== System health",
        f"CPU {psutil.cpu_percent(interval=0.2):.0f}% of {psutil.cpu_count()} cores",
        f"memory {memory.percent:.0f}% used ({memory.available / 2**30:.1f} GiB free)",
        f"disk {disk.percent:.0f}% used ({disk.free / 2**30:.1f} GiB free)",
    ]
    return lines
