"""Typed, validated configuration loaded from ``mlops/configs/*.yaml`` plus environment overrides.

Each YAML file is read once into a pydantic model that forbids unknown keys, so a typo or a bad
value stops start-up with the file, the key and what is allowed. Relative paths are anchored at
the project root, never at the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROJ_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJ_ROOT / "mlops" / "configs"

MODEL_KEYS = ("embedding_model", "llm_model", "few_shot_model", "rag_model")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]


class ConfigError(ValueError):
    """A configuration file or environment variable is missing, malformed or out of range."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- mlflow_config.yaml
class MlflowSettings(_Strict):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    experiment_name: Annotated[str, Field(min_length=1)] = "travel_chatbot_models"
    artifact_location: str = "./mlruns/artifacts"
    registry_uri: str | None = None
    register_models: bool = True
    ui_host: str = "127.0.0.1"
    ui_port: Annotated[int, Field(ge=1, le=65535)] = 5000

    @field_validator("tracking_uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        allowed = (
            "sqlite:///",
            "http://",
            "https://",
            "postgresql://",
            "postgresql+psycopg://",
            "postgresql+psycopg2://",
            "mysql://",
        )
        if not value.startswith(allowed):
            raise ValueError(f"must start with one of {', '.join(allowed)}")
        return value


class MlflowFile(_Strict):
    mlflow: MlflowSettings = MlflowSettings()


# ---------------------------------------------------------------- training_config.yaml
class EmbeddingSettings(_Strict):
    base_model: str | None = None
    vocab_size: Annotated[int, Field(ge=500, le=100_000)] = 10000
    embedding_dim: Annotated[int, Field(ge=16, le=1024)] = 128
    epochs: Annotated[int, Field(ge=1, le=100)] = 10
    batch_size: Annotated[int, Field(ge=4, le=4096)] = 64
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 0.1
    # euclidean distance between unit vectors is at most 2: a margin of 2 or more can never be met
    triplet_margin: Annotated[float, Field(gt=0.0, lt=2.0)] = 0.6
    triplet_samples: Annotated[int, Field(ge=10, le=1_000_000)] = 2000


class IntentSettings(_Strict):
    word_ngram_max: Annotated[int, Field(ge=1, le=4)] = 2
    char_ngram_min: Annotated[int, Field(ge=1, le=8)] = 2
    char_ngram_max: Annotated[int, Field(ge=1, le=10)] = 5
    C: Annotated[float, Field(gt=0.0)] = 1.0
    calibration_folds: Annotated[int, Field(ge=2, le=20)] = 5
    oos_weight: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1
    refit_on_val: bool = True
    embedding_weight: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    whiten_eps: Annotated[float, Field(gt=0.0, le=1.0)] = 0.03
    courtesy_augmentation: Fraction = 0.1


class FewShotSettings(_Strict):
    k_values: Annotated[list[PositiveInt], Field(min_length=1)] = [4, 8, 16]
    seeds: Annotated[int, Field(ge=1, le=100)] = 5
    deploy_k: PositiveInt = 16
    dense_weight: Fraction = 0.6
    whiten_eps: Annotated[float, Field(gt=0.0, le=1.0)] | None = 0.03
    oos_bias: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15

    @field_validator("k_values")
    @classmethod
    def _reported_ks(cls, value: list[int]) -> list[int]:
        if not {4, 8, 16} <= set(value):
            raise ValueError("must include 4, 8 and 16 (the results file reports accuracy_k4, _k8 and _k16)")
        return sorted(set(value))


class RagSettings(_Strict):
    top_k: Annotated[int, Field(ge=1, le=50)] = 3
    dense_weights: Annotated[list[Fraction], Field(min_length=1)] = [0.0, 0.25, 0.5, 0.75, 1.0]
    name_boost: Annotated[float, Field(ge=0.0, le=5.0)] = 0.3
    country_boost: Annotated[float, Field(ge=0.0, le=5.0)] = 0.1
    name_boosts: list[Annotated[float, Field(ge=0.0, le=5.0)]] = [0.0, 0.05, 0.1, 0.2, 0.3]
    country_boosts: list[Annotated[float, Field(ge=0.0, le=5.0)]] = [0.0, 0.05, 0.1]


class TrainingSettings(_Strict):
    seed: int = 42
    data_dir: str = "./data"
    results_dir: str = "./mlops/results"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    embedding_model: EmbeddingSettings = EmbeddingSettings()
    llm_model: IntentSettings = IntentSettings()
    few_shot_model: FewShotSettings = FewShotSettings()
    rag_model: RagSettings = RagSettings()


class TrainingFile(_Strict):
    training: TrainingSettings = TrainingSettings()


# ---------------------------------------------------------------- deployment_config.yaml
class Gates(_Strict):
    min_accuracy: Fraction = 0.80
    min_oos_recall: Fraction = 0.75
    min_hit_at_3: Fraction = 0.85
    min_triplet_accuracy: Fraction = 0.85
    min_few_shot_accuracy: Fraction = 0.70
    max_p95_latency_ms: Annotated[float, Field(gt=0.0)] = 50.0
    tolerance: Fraction = 0.01


class DeployedModel(_Strict):
    enabled: bool = True


class DeploymentSettings(_Strict):
    environment: Literal["local", "staging", "production"] = "local"
    mode: Literal["standalone"] = "standalone"
    models_dir: str = "./models"
    chatbot_host: str = "127.0.0.1"
    chatbot_port: Annotated[int, Field(ge=1, le=65535)] = 8501
    services_dir: str = "./mlruns/services"
    gates: Gates = Gates()
    models: dict[Literal["embedding_model", "llm_model", "few_shot_model", "rag_model"], DeployedModel] = Field(
        default_factory=lambda: {key: DeployedModel() for key in MODEL_KEYS}
    )


class DeploymentFile(_Strict):
    deployment: DeploymentSettings = DeploymentSettings()


# ---------------------------------------------------------------- monitoring_config.yaml
Severity = Literal["info", "warning", "critical"]


class AlertRule(_Strict):
    """One alert rule: fires once when its value crosses ``threshold``, resolves when it is back."""

    enabled: bool = True
    threshold: Annotated[float, Field(ge=0.0, le=1_000_000.0)] | None = None  # None: the legacy key (see rules)
    window_minutes: Annotated[int, Field(ge=1, le=10_080)] = 15
    min_samples: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    severity: Severity = "warning"
    cooldown_minutes: Annotated[int, Field(ge=0, le=10_080)] = 30


class AlertRules(_Strict):
    """The alert rules by name; a rule given in the YAML only overrides the keys it names."""

    live_accuracy: AlertRule = AlertRule(window_minutes=60, min_samples=10, severity="critical")
    canary_accuracy: AlertRule = AlertRule(window_minutes=120, severity="critical", cooldown_minutes=60)
    p95_latency: AlertRule = AlertRule(window_minutes=5, min_samples=20)
    cpu_percent: AlertRule = AlertRule(window_minutes=5)
    memory_percent: AlertRule = AlertRule(threshold=90.0, window_minutes=5)
    oos_rate: AlertRule = AlertRule(threshold=0.3, window_minutes=30, min_samples=20)
    drift_score: AlertRule = AlertRule(threshold=1.0, window_minutes=60, min_samples=200, cooldown_minutes=120)


# rules compared as fractions, as percentages; every other threshold only has to be >= 0
_FRACTION_RULES = ("live_accuracy", "canary_accuracy", "oos_rate")
_PERCENT_RULES = ("cpu_percent", "memory_percent")
_EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class MonitoringSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8502
    interval_seconds: Annotated[int, Field(ge=1, le=86_400)] = 30
    alert_threshold: Fraction = 0.8
    max_response_time_s: Annotated[float, Field(gt=0.0)] = 2.0
    max_cpu_percent: Annotated[float, Field(gt=0.0, le=100.0)] = 80.0
    inference_log: str = "./mlruns/inference_log.db"
    retention_days: Annotated[int, Field(ge=1, le=3650)] | None = 30
    max_rows: Annotated[int, Field(ge=1000, le=1_000_000_000)] | None = 1_000_000
    rules: AlertRules = AlertRules()
    alert_log: str = "./mlruns/alerts.log"
    webhook_url_env: _EnvName = "MLOPS_ALERT_WEBHOOK_URL"
    webhook_timeout_s: Annotated[float, Field(gt=0.0, le=60.0)] = 3.0
    webhook_retries: Annotated[int, Field(ge=0, le=10)] = 3
    webhook_backoff_s: Annotated[float, Field(ge=0.0, le=60.0)] = 0.5
    canary_interval_minutes: Annotated[int, Field(ge=1, le=10_080)] = 30
    drift_reference_dir: str = "./mlruns/monitoring"
    serving_processes: Annotated[list[Annotated[str, Field(min_length=3)]], Field(max_length=20)] = [
        "mlops/chatbot/app.py",
        "mlops.chatbot",
        "mlflow models serve",
    ]
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9108

    @field_validator("rules", mode="before")
    @classmethod
    def _rule_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged = dict(value)
        for name, field in AlertRules.model_fields.items():
            if isinstance(value.get(name), dict):
                merged[name] = {**field.default.model_dump(), **value[name]}
        return merged

    @field_validator("rules")
    @classmethod
    def _threshold_ranges(cls, value: AlertRules) -> AlertRules:
        for name in ("memory_percent", "oos_rate", "drift_score"):
            if getattr(value, name).threshold is None:
                raise ValueError(f"rule '{name}': threshold is required (it has no legacy key to default to)")
        for name in _FRACTION_RULES + _PERCENT_RULES:
            threshold = getattr(value, name).threshold
            upper = 1.0 if name in _FRACTION_RULES else 100.0
            if threshold is not None and threshold > upper:
                raise ValueError(f"rule '{name}': threshold must be between 0 and {upper:g}, got {threshold:g}")
        return value

    @property
    def alert_rules(self) -> dict[str, AlertRule]:
        """Every rule by name, with an unset threshold taken from its legacy key.

        ``live_accuracy`` and ``canary_accuracy`` default to ``alert_threshold`` (so ``ALERT_THRESHOLD``
        still works), ``p95_latency`` to ``max_response_time_s`` and ``cpu_percent`` to ``max_cpu_percent``.
        """
        legacy = {
            "live_accuracy": self.alert_threshold,
            "canary_accuracy": self.alert_threshold,
            "p95_latency": self.max_response_time_s,
            "cpu_percent": self.max_cpu_percent,
        }
        rules = {}
        for name in AlertRules.model_fields:
            rule = getattr(self.rules, name)
            if rule.threshold is None:
                rule = rule.model_copy(update={"threshold": legacy[name]})
            rules[name] = rule
        return rules


class MonitoringFile(_Strict):
    monitoring: MonitoringSettings = MonitoringSettings()


class Settings(_Strict):
    """All configuration of the toolkit, with relative paths already anchored at ``root``."""

    root: Path
    mlflow: MlflowSettings
    training: TrainingSettings
    deployment: DeploymentSettings
    monitoring: MonitoringSettings

    def path(self, value: str | Path) -> Path:
        """Resolve a configured path against the project root."""
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (self.root / candidate).resolve()

    @property
    def data_dir(self) -> Path:
        return self.path(self.training.data_dir)

    @property
    def results_dir(self) -> Path:
        return self.path(self.training.results_dir)

    @property
    def models_dir(self) -> Path:
        return self.path(self.deployment.models_dir)

    @property
    def services_dir(self) -> Path:
        return self.path(self.deployment.services_dir)

    @property
    def tracking_uri(self) -> str:
        return anchor_sqlite_uri(self.mlflow.tracking_uri, self.root)

    @property
    def inference_log_url(self) -> str:
        """SQLAlchemy URL of the inference log: a configured URL as is, a path anchored at the root."""
        value = self.monitoring.inference_log
        return value if "://" in value else f"sqlite:///{self.path(value)}"

    @property
    def artifact_location(self) -> str:
        return self.path(self.mlflow.artifact_location).as_uri()


# environment variable -> (file, dotted key inside that file)
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "MLFLOW_TRACKING_URI": ("mlflow_config.yaml", "mlflow.tracking_uri"),
    "MLFLOW_EXPERIMENT_NAME": ("mlflow_config.yaml", "mlflow.experiment_name"),
    "MODEL_PATH": ("deployment_config.yaml", "deployment.models_dir"),
    "LOG_LEVEL": ("training_config.yaml", "training.log_level"),
    "MONITORING_INTERVAL": ("monitoring_config.yaml", "monitoring.interval_seconds"),
    "ALERT_THRESHOLD": ("monitoring_config.yaml", "monitoring.alert_threshold"),
    "MLOPS_INFERENCE_LOG": ("monitoring_config.yaml", "monitoring.inference_log"),
}

_FILES: dict[str, type[_Strict]] = {
    "mlflow_config.yaml": MlflowFile,
    "training_config.yaml": TrainingFile,
    "deployment_config.yaml": DeploymentFile,
    "monitoring_config.yaml": MonitoringFile,
}


def anchor_sqlite_uri(uri: str, root: Path) -> str:
    """Make a relative ``sqlite:///`` URI absolute against ``root`` (SQLAlchemy would use the cwd)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    db_path = Path(uri[len(prefix) :])
    if db_path.is_absolute():
        return uri
    return prefix + str((root / db_path).resolve())


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' appears twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found (expected one of {', '.join(_FILES)})")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _set_dotted(data: dict[str, Any], dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            return  # the file itself is malformed there; validation reports it
        node = child
    node[leaf] = value


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        current = field.annotation
    return sorted(current.model_fields)


def _format_error(source: str, model: type[BaseModel], error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        return f"{source}: unknown key '{key}'; allowed keys here: {', '.join(allowed) or '(none)'}"
    got = error.get("input")
    return f"{source}: key '{key}': {error['msg']} (got {got!r})"


def _validate(source: str, model: type[_Strict], data: dict[str, Any]) -> _Strict:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        messages = [_format_error(source, model, err) for err in exc.errors()]
        raise ConfigError("\n".join(messages)) from None


def load_settings(
    config_dir: Path | None = None,
    env: dict[str, str] | None = None,
    root: Path | None = None,
) -> Settings:
    """Load and validate all four configuration files, then apply environment overrides.

    Args:
        config_dir: Folder holding the YAML files; defaults to ``$MLOPS_CONFIG_DIR`` or ``mlops/configs``.
        env: Environment to read overrides from; defaults to ``os.environ``.
        root: Folder relative paths are anchored at; defaults to the project root.

    Returns:
        The validated settings.

    Raises:
        ConfigError: A file is missing or invalid, a key is unknown, or a value is out of range.
    """
    env = dict(os.environ) if env is None else env
    if config_dir is None:
        config_dir = Path(env["MLOPS_CONFIG_DIR"]) if env.get("MLOPS_CONFIG_DIR") else CONFIG_DIR
    config_dir = Path(config_dir)
    raw = {name: _read_yaml(config_dir / name) for name in _FILES}
    overridden: dict[str, list[str]] = {}
    for var, (name, dotted) in ENV_OVERRIDES.items():
        if env.get(var, "").strip():
            _set_dotted(raw[name], dotted, env[var].strip())
            overridden.setdefault(name, []).append(var)

    parsed = {}
    for name, model in _FILES.items():
        source = str(config_dir / name)
        if name in overridden:
            source += f" (with environment override {', '.join(overridden[name])})"
        parsed[name] = _validate(source, model, raw[name])

    return Settings(
        root=(root or PROJ_ROOT).resolve(),
        mlflow=parsed["mlflow_config.yaml"].mlflow,
        training=parsed["training_config.yaml"].training,
        deployment=parsed["deployment_config.yaml"].deployment,
        monitoring=parsed["monitoring_config.yaml"].monitoring,
    )
