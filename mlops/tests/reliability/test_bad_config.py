"""Bad configuration: a clear message naming the file and key, exit 2, and nothing half-done.

Already covered (see docs/RELIABILITY.md): unknown key, wrong type, out-of-range value, invalid YAML,
missing file, bad environment variable (mlops/tests/test_config.py), bad alert rules
(mlops/tests/test_monitoring_alerts.py).
"""

from __future__ import annotations

import shutil

import pytest

from mlops.config import CONFIG_DIR, ConfigError, load_settings

from .conftest import TRAIN_SCRIPT, run_cli, store_snapshot


@pytest.fixture
def config_dir(tmp_path):
    target = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, target)
    return target


def _replace(config_dir, name, old, new):
    path = config_dir / name
    assert old in path.read_text(), f"{old!r} not in {name}"
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("training_config.yaml", "  seed: 42", "  seed: 42\n  seed: 7", r"key 'seed' appears twice \(lines 3 and 4\)"),
        ("mlflow_config.yaml", "  register_models: true", "  register_models: !!python/object/apply:os.system [id]",
         r"mlflow_config.yaml: invalid YAML"),
        ("monitoring_config.yaml", "  retention_days: 30", "  retention_days: 0", r"'monitoring.retention_days'"),
        ("monitoring_config.yaml", "  max_rows: 1000000", "  max_rows: many", r"'monitoring.max_rows'"),
        ("monitoring_config.yaml", "  port: 8502", "  port: -1", r"'monitoring.port'"),
        ("deployment_config.yaml", '  environment: "local"', '  environment: "prod"', r"'deployment.environment'"),
        ("training_config.yaml", "  seed: 42", "\tseed: 42", r"training_config.yaml: invalid YAML"),
        ("deployment_config.yaml", "deployment:", "- deployment:", r"expected a mapping at the top level"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_with_file_and_key(config_dir, name, old, new, expected):
    _replace(config_dir, name, old, new)
    with pytest.raises(ConfigError, match=expected) as err:
        load_settings(config_dir, env={})
    assert name in str(err.value)


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("ALERT_THRESHOLD", "1.5", r"ALERT_THRESHOLD.*'monitoring.alert_threshold'"),
        ("MONITORING_INTERVAL", "0", r"MONITORING_INTERVAL.*'monitoring.interval_seconds'"),
        ("LOG_LEVEL", "LOUD", r"LOG_LEVEL.*'training.log_level'"),
        ("MLFLOW_TRACKING_URI", "file:///tmp/mlruns", r"MLFLOW_TRACKING_URI.*must start with one of"),
    ],
)
def test_bad_environment_values_name_the_variable(config_dir, var, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(config_dir, env={var: value})


def test_a_yaml_tag_never_runs_code(config_dir, tmp_path):
    marker = tmp_path / "pwned"
    _replace(config_dir, "mlflow_config.yaml", "  register_models: true",
             f"  register_models: !!python/object/apply:os.system ['touch {marker}']")  # fmt: skip
    with pytest.raises(ConfigError):
        load_settings(config_dir, env={})
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "old", "new", "env", "expected"),
    [
        ("training_config.yaml", "epochs: 1", "epocs: 1", {}, "unknown key 'training.embedding_model.epocs'"),
        ("monitoring_config.yaml", "max_rows: 1000000", "max_rows: 5", {}, "'monitoring.max_rows'"),
        ("training_config.yaml", "seed: 42", "seed: [42", {}, "training_config.yaml: invalid YAML"),
        (None, None, None, {"ALERT_THRESHOLD": "high"}, "with environment override ALERT_THRESHOLD"),
    ],
)  # fmt: skip
def test_the_training_cli_refuses_bad_config_and_changes_nothing(live, tmp_path, name, old, new, env, expected):
    configs = tmp_path / "configs"
    shutil.copytree(live.root / "configs", configs)
    if name:
        _replace(configs, name, old, new)
    before = store_snapshot(live)
    result = run_cli(TRAIN_SCRIPT, live, config_dir=configs, env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert store_snapshot(live) == before


def test_a_missing_config_file_creates_nothing(tmp_path, live):
    configs = tmp_path / "configs"
    shutil.copytree(live.root / "configs", configs)
    (configs / "deployment_config.yaml").unlink()
    result = run_cli(TRAIN_SCRIPT, live, config_dir=configs)
    assert result.returncode == 2 and "deployment_config.yaml: configuration file not found" in result.stderr
