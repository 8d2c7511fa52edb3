"""Tampering and trust: modified, truncated or replaced model files, a manifest pointing outside models/,
pickles that would run code, default hosts, the webhook secret, and hostile text in the UIs.

Already covered (see docs/RELIABILITY.md): a flipped bit, a missing file, a '../' path
(mlops/tests/test_deployment.py); the webhook URL never in logs or CLI output
(mlops/tests/test_monitoring_alerts.py); an HTML query shown verbatim on the dashboard
(mlops/tests/test_dashboard.py).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from mlops.chatbot import DeploymentError, TravelChatbot
from mlops.config import (
    CONFIG_DIR,
    DeploymentSettings,
    MlflowSettings,
    MonitoringSettings,
    load_settings,
)
from mlops.integrity import sha256_file
from mlops.monitoring import alerts
from mlops.services import service_specs

from ..test_chat_ui import APP
from ..test_dashboard import isolated, page
from ..test_deployment import settings_for


class RunsCode:
    """A pickle that runs ``os.system`` when loaded: what an attacker would drop into models/."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class ImportsCode:
    """The same through ``builtins.exec`` (a different global an attacker might use)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture
def models_copy(live, tmp_path):
    target = tmp_path / "models"
    shutil.copytree(live.models_dir, target)
    manifest = json.loads((target / "manifest.json").read_text())
    ((relative, _),) = manifest["models"]["llm_model"]["files"].items()
    return target, manifest, target / relative


def _write_manifest(models_dir, manifest):
    (models_dir / "manifest.json").write_text(json.dumps(manifest))


def test_a_truncated_model_file_is_refused(models_copy):
    models_dir, _, model = models_copy
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(DeploymentError, match="differs from the manifest"):
        TravelChatbot.load(models_dir)


@pytest.mark.parametrize("rewrite_manifest", [False, True], ids=["file_replaced", "file_and_manifest_hash_replaced"])
@pytest.mark.parametrize("payload", ["os.system", "exec"])
def test_a_pickle_that_would_run_code_is_refused_before_it_runs(models_copy, tmp_path, payload, rewrite_manifest):
    models_dir, manifest, model = models_copy
    marker = tmp_path / "code-ran"
    evil = RunsCode(f"touch {marker}") if payload == "os.system" else ImportsCode(f"open({str(marker)!r}, 'w')")
    model.write_bytes(pickle.dumps(evil))
    if rewrite_manifest:  # an attacker who can write models/ can also rewrite the hash: the unpickler still refuses
        manifest["models"]["llm_model"]["files"] = {str(model.relative_to(models_dir)): sha256_file(model)}
        _write_manifest(models_dir, manifest)
    expected = "refusing to load global" if rewrite_manifest else "differs from the manifest"
    with pytest.raises(DeploymentError, match=expected):
        TravelChatbot.load(models_dir)
    assert not marker.exists(), "the pickle's code ran"


@pytest.mark.parametrize("kind", ["absolute", "symlink"])
def test_a_manifest_entry_leaving_models_is_refused(models_copy, tmp_path, kind):
    models_dir, manifest, model = models_copy
    outside = tmp_path / "outside.pkl"
    shutil.copy(model, outside)
    if kind == "absolute":
        relative = str(outside)
    else:
        relative = "releases/link.pkl"
        (models_dir / relative).symlink_to(outside)
    manifest["models"]["llm_model"]["files"] = {relative: sha256_file(outside)}
    _write_manifest(models_dir, manifest)
    with pytest.raises(DeploymentError, match="points outside"):
        TravelChatbot.load(models_dir)


def test_a_tampered_new_deployment_is_not_swapped_in(models_copy, caplog):
    models_dir, manifest, model = models_copy
    bot = TravelChatbot.load(models_dir)
    versions = bot.versions
    model.write_bytes(model.read_bytes() + b"\0")
    manifest["release"] = "tampered"
    _write_manifest(models_dir, manifest)  # a new manifest: the bot tries it on the next refresh
    with caplog.at_level(logging.ERROR):
        assert bot.refresh() is False
    assert "still serving the previous one" in caplog.text and "differs from the manifest" in caplog.text
    assert bot.versions == versions and bot.process_query("hello")["answer"]


def _hosts(model) -> dict[str, str]:
    found = {}
    for name, value in model:
        if "host" in name:
            found[name] = value
        elif hasattr(value, "model_fields"):
            found |= {f"{name}.{key}": host for key, host in _hosts(value).items()}
    return found


def test_every_service_binds_loopback_by_default(tmp_path):
    defaults = {**_hosts(MlflowSettings()), **_hosts(DeploymentSettings()), **_hosts(MonitoringSettings())}
    assert len(defaults) >= 4 and set(defaults.values()) == {"127.0.0.1"}, defaults
    shipped = load_settings(CONFIG_DIR, env={}, root=tmp_path)
    configured = {**_hosts(shipped.mlflow), **_hosts(shipped.deployment), **_hosts(shipped.monitoring)}
    assert set(configured.values()) == {"127.0.0.1"}, configured
    for spec in service_specs(shipped).values():
        for flag in ("--host", "--server.address"):
            if flag in spec.command:
                assert spec.command[spec.command.index(flag) + 1] == "127.0.0.1", spec.command
        assert "0.0.0.0" not in " ".join(map(str, spec.command))
        assert spec.host in ("127.0.0.1", ""), spec


def _rendered(node) -> list[str]:
    out = [str(getattr(node, "proto", ""))]
    if hasattr(node, "value"):
        try:
            out.append(str(node.value))
        except Exception:  # some elements have no plain value
            pass
    for child in getattr(node, "children", {}).values():
        out += _rendered(child)
    return out


def test_the_webhook_secret_never_reaches_the_dashboard(tmp_path, tiny_data_dir, monkeypatch, caplog):
    secret = "https://hooks.example.invalid/services/T0/B0/SECRET-TOKEN-42"
    overrides = isolated(tmp_path)
    overrides["monitoring_config.yaml"]["monitoring"]["webhook_retries"] = 0
    settings = settings_for(tmp_path, tiny_data_dir, overrides)
    channels = alerts.default_channels(settings, env={"MLOPS_ALERT_WEBHOOK_URL": secret})
    alerts.evaluate(settings, {"oos_rate": alerts.Measurement(0.9, 50)}, channels=channels)  # fires; the post fails
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", secret)
    at = page(settings.root / "configs", monkeypatch)
    assert not at.exception
    shown = "\n".join(_rendered(at._tree))
    assert "oos_rate" in shown  # the alert is on the page...
    assert "SECRET-TOKEN" not in shown and "hooks.example.invalid" not in shown  # ...its channel's URL is not
    assert "SECRET-TOKEN" not in caplog.text and "SECRET-TOKEN" not in (tmp_path / "alerts.log").read_text()


def test_a_script_query_in_the_chat_ui_is_shown_as_literal_text(live, monkeypatch):
    query = "<script>alert('x')</script><img src=x onerror=alert(1)> **bold** [a](javascript:alert(2))"
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(live.root / "configs"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.chat_input[0].set_value(query).run()
    assert not at.exception
    assert at.text[0].value == query  # st.text: shown verbatim, never parsed as HTML or Markdown
    assert not at.get("html")
    for element in [*at.markdown, *at.caption]:
        assert "<script" not in str(element.value) and "javascript:" not in str(element.value)
