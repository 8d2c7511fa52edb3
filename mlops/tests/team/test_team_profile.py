"""The team profile without servers: derived from the URIs, passwords hidden, the overlay in step with the base."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import yaml
from sqlalchemy.engine import make_url

from mlops.config import CONFIG_DIR, load_settings
from mlops.pipeline import pinned_requirements
from mlops.status import status_report
from mlops.team import LOCAL, TEAM, active_profile, check_remote_services, describe_profile, hide_password
from mlops.tracking import experiment_artifact_location

from ..conftest import write_settings
from .conftest import CONFIG_FILES, TEAM_DIR

# the keys the team overlay changes; every other key must stay as in mlops/configs
TEAM_KEYS = {"mlflow.tracking_uri", "monitoring.inference_log"}


def flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def with_uris(tmp_path, tracking: str | None = None, log: str | None = None):
    overrides = {}
    if tracking:
        overrides["mlflow_config.yaml"] = {"mlflow": {"tracking_uri": tracking}}
    if log:
        overrides["monitoring_config.yaml"] = {"monitoring": {"inference_log": log}}
    return write_settings(tmp_path, overrides)


@pytest.mark.parametrize(
    ("tracking", "log", "expected"),
    [
        (None, None, LOCAL),
        ("http://mlflow.example:5050", None, TEAM),
        ("https://mlflow.example", "postgresql://mlops@db/mon", TEAM),
        ("postgresql://mlops@db/mlflow", None, TEAM),
        (None, "postgresql+psycopg://mlops@db/mon", TEAM),
    ],
)
def test_the_profile_is_derived_from_the_configured_uris(tmp_path, tracking, log, expected):
    settings = with_uris(tmp_path, tracking, log)
    assert active_profile(settings) == expected
    assert describe_profile(settings).startswith(f"{expected}: MLflow at ")


def test_passwords_never_show(tmp_path):
    assert hide_password("postgresql://mlops:pa%40ss@db:5432/mon") == "postgresql://mlops:***@db:5432/mon"
    assert hide_password("http://alice:secret@mlflow:5050") == "http://alice:***@mlflow:5050"
    assert hide_password("postgresql://mlops@db/mon") == "postgresql://mlops@db/mon"
    assert hide_password("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    settings = with_uris(tmp_path, "http://mlflow:5050", "postgresql://mlops:hunter2@db:5432/mon")
    assert "hunter2" not in describe_profile(settings)
    assert "postgresql://mlops:***@db:5432/mon" in describe_profile(settings)


def test_the_local_profile_checks_no_service(tmp_path):
    lines = check_remote_services(write_settings(tmp_path))
    assert len(lines) == 1 and lines[0].startswith("profile local: MLflow at sqlite:///")
    report = status_report(write_settings(tmp_path))
    assert report[report.index("== Profile") + 1].startswith("profile local")


def test_the_team_overlay_loads_and_changes_only_the_shared_stores():
    settings = load_settings(TEAM_DIR, env={})
    assert active_profile(settings) == TEAM
    assert settings.tracking_uri.startswith("http://") and settings.inference_log_url.startswith("postgresql://")
    assert make_url(settings.inference_log_url).password is None  # passwords come from PGPASSWORD / ~/.pgpass
    for name in CONFIG_FILES:
        base = flat(yaml.safe_load((CONFIG_DIR / name).read_text()))
        team = flat(yaml.safe_load((TEAM_DIR / name).read_text()))
        changed = {key for key in base.keys() | team.keys() if base.get(key) != team.get(key)}
        assert changed <= TEAM_KEYS, (
            f"{TEAM_DIR / name} differs from {CONFIG_DIR / name} in {sorted(changed - TEAM_KEYS)}: "
            "copy the change into the team overlay"
        )


def test_the_environment_still_overrides_the_overlay():
    settings = load_settings(TEAM_DIR, env={"MLFLOW_TRACKING_URI": "http://mlflow.team.example:5050"})
    assert settings.tracking_uri == "http://mlflow.team.example:5050"


def test_a_tracking_server_decides_where_artifacts_go(tmp_path):
    local = write_settings(tmp_path)
    assert experiment_artifact_location(local) == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert experiment_artifact_location(with_uris(tmp_path, "http://mlflow:5050")) is None
    database = with_uris(tmp_path, "postgresql://mlops@db/mlflow")
    assert experiment_artifact_location(database) == (tmp_path / "mlruns" / "artifacts").as_uri()
    bucket = write_settings(
        tmp_path,
        {"mlflow_config.yaml": {"mlflow": {"tracking_uri": "http://mlflow:5050", "artifact_location": "s3://b/ml"}}},
    )
    assert experiment_artifact_location(bucket) == "s3://b/ml"


def test_postgresql_urls_use_the_pinned_driver():
    pins = pinned_requirements()
    assert pins["psycopg"] == version("psycopg") and pins["psycopg-binary"] == version("psycopg-binary")
    # MLflow's postgresql:// and the inference log's URL both resolve to psycopg 3 through SQLAlchemy
    assert make_url("postgresql://mlops@db/mon").get_dialect().driver == "psycopg"
