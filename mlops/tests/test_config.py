"""Code tier: configuration loads typed values and refuses bad ones with file, key and what is allowed."""

from __future__ import annotations

import shutil

import pytest

from mlops.config import CONFIG_DIR, ConfigError, anchor_sqlite_uri, load_settings


@pytest.fixture
def config_dir(tmp_path):
    target = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, target)
    return target


def test_defaults_match_the_design(tmp_path):
    settings = load_settings(env={}, root=tmp_path)
    assert settings.mlflow.experiment_name == "travel_chatbot_models"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert settings.models_dir == tmp_path / "models"
    assert settings.monitoring.port == 8502 and settings.monitoring.host == "127.0.0.1"
    assert settings.monitoring.alert_threshold == 0.8 and settings.monitoring.interval_seconds == 30


def test_seed_environment_variables_override(tmp_path):
    env = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
        "MLFLOW_EXPERIMENT_NAME": "other",
        "MODEL_PATH": str(tmp_path / "elsewhere"),
        "LOG_LEVEL": "DEBUG",
        "MONITORING_INTERVAL": "5",
        "ALERT_THRESHOLD": "0.9",
    }
    settings = load_settings(env=env, root=tmp_path)
    assert settings.tracking_uri == "http://127.0.0.1:5999"
    assert settings.mlflow.experiment_name == "other"
    assert settings.models_dir == tmp_path / "elsewhere"
    assert settings.training.log_level == "DEBUG"
    assert settings.monitoring.interval_seconds == 5
    assert settings.monitoring.alert_threshold == 0.9


def test_unknown_key_names_file_key_and_allowed_keys(config_dir):
    path = config_dir / "training_config.yaml"
    path.write_text(path.read_text().replace("  seed: 42", "  seed: 42\n  sede: 1"))
    with pytest.raises(ConfigError) as err:
        load_settings(config_dir, env={})
    message = str(err.value)
    assert "training_config.yaml" in message and "'training.sede'" in message
    assert "seed" in message and "data_dir" in message  # the allowed keys are listed


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  seed: 42", "  seed: forty-two", "'training.seed'"),
        ("  port: 8502", "  port: 70000", "'monitoring.port'"),
        ("    min_accuracy: 0.80", "    min_accuracy: 1.5", "'deployment.gates.min_accuracy'"),
        ('  tracking_uri: "sqlite:///mlruns/mlflow.db"', '  tracking_uri: "ftp://x"', "must start with one of"),
    ],
)
def test_bad_values_are_refused(config_dir, old, new, expected):
    name = next(p for p in config_dir.iterdir() if old in p.read_text())
    name.write_text(name.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=expected):
        load_settings(config_dir, env={})


def test_invalid_yaml_and_missing_file(config_dir):
    (config_dir / "monitoring_config.yaml").write_text("monitoring: [unclosed\n")
    with pytest.raises(ConfigError, match="monitoring_config.yaml: invalid YAML"):
        load_settings(config_dir, env={})
    (config_dir / "monitoring_config.yaml").unlink()
    with pytest.raises(ConfigError, match="monitoring_config.yaml: configuration file not found"):
        load_settings(config_dir, env={})


def test_bad_environment_value_names_the_variable(config_dir):
    with pytest.raises(ConfigError, match="MONITORING_INTERVAL") as err:
        load_settings(config_dir, env={"MONITORING_INTERVAL": "often"})
    assert "'monitoring.interval_seconds'" in str(err.value)


def test_relative_sqlite_uri_is_anchored_not_cwd(tmp_path):
    assert anchor_sqlite_uri("sqlite:///mlruns/x.db", tmp_path) == f"sqlite:///{tmp_path}/mlruns/x.db"
    assert anchor_sqlite_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert anchor_sqlite_uri("http://host:5000", tmp_path) == "http://host:5000"
