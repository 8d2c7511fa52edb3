"""The launchers as a user runs them: the menu with piped input, the fast path's exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlops.config import PROJ_ROOT
from mlops.deployment import deploy
from mlops.training import run_training

from .conftest import cli_env
from .test_deployment import settings_for


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_data_dir):
    settings = settings_for(tmp_path_factory.mktemp("menu"), tiny_data_dir)
    run_training(settings)
    deploy(settings)
    return settings


def run(script: str, settings, stdin: str = "", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJ_ROOT / script), *args], input=stdin, env=cli_env(settings), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def test_menu_with_piped_input_reprompts_shows_status_and_exits(deployed):
    out = run("run_mlops.py", deployed, "9\n5\n6\n")
    assert out.returncode == 0, out.stderr
    assert "'9' is not a choice: type a number from 1 to 6" in out.stdout
    assert "== Deployment" in out.stdout and "llm_model" in out.stdout
    assert "== Tracking store" in out.stdout and "== System health" in out.stdout
    assert out.stdout.count("Choose 1-6") == 3


def test_menu_ends_cleanly_at_end_of_input(deployed):
    out = run("run_mlops.py", deployed, "3\n")
    assert out.returncode == 0 and "unchanged: the registered versions are already deployed" in out.stdout


def test_fast_path_cli_reuses_and_reports(deployed):
    out = run("simple_mlops.py", deployed)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("reused: data, config and code unchanged") == 4
    assert "Deployment: unchanged" in out.stdout


def test_bad_config_is_a_clear_error_with_exit_code_2(tmp_path, tiny_data_dir):
    settings = settings_for(tmp_path, tiny_data_dir)
    path = settings.root / "configs" / "training_config.yaml"
    path.write_text(path.read_text().replace("seed: 42", "seed: lots"))
    for script in ("simple_mlops.py", "mlops_pipeline.py", "run_mlops.py"):
        out = run(script, settings, "6\n")
        assert out.returncode == 2, (script, out.stdout, out.stderr)
        assert "training_config.yaml" in out.stderr and "'training.seed'" in out.stderr


def test_a_refused_deployment_exits_3_and_names_the_gate(tmp_path, tiny_data_dir):
    strict = {"deployment_config.yaml": {"deployment": {"gates": {"min_accuracy": 0.999}}}}  # tiny data: ~0.4
    settings = settings_for(tmp_path, tiny_data_dir, strict)
    run_training(settings)
    out = run("mlops/scripts/deploy_chatbot_models.py", settings)
    assert out.returncode == 3, out.stderr
    assert "refused: llm_model v1: accuracy" in out.stderr and "is below the gate 0.999" in out.stderr
    assert "nothing deployed changed" in out.stderr
    assert not (settings.models_dir / "manifest.json").exists()


def test_menu_at_a_terminal_reprompts_and_ends_at_ctrl_d(deployed):
    import pexpect

    menu = pexpect.spawn(
        sys.executable, [str(PROJ_ROOT / "run_mlops.py")], env=cli_env(deployed), encoding="utf-8", timeout=120
    )
    try:
        menu.expect_exact("Choose 1-6: ")
        menu.sendline("seven")
        menu.expect_exact("'seven' is not a choice: type a number from 1 to 6")
        menu.expect_exact("Choose 1-6: ")
        menu.sendline("5")
        menu.expect_exact("== Services")
        menu.expect_exact("== System health")
        menu.expect_exact("Choose 1-6: ")
        menu.sendeof()
        menu.expect(pexpect.EOF)
    finally:
        menu.close()
    assert menu.exitstatus == 0


def test_the_dependency_check_names_each_missing_or_mismatched_package_and_the_fix():
    from mlops.pipeline import DependencyError, check_dependencies, pinned_requirements

    installed = check_dependencies()  # this very environment satisfies requirements.txt
    assert set(installed) == set(pinned_requirements()) and installed["mlflow"]
    wrong = {"pyyaml": "0.0.1", "no-such-package-for-the-check": "1.0", "mlflow": installed["mlflow"]}
    with pytest.raises(DependencyError) as caught:
        check_dependencies(wrong)
    message = str(caught.value)
    assert "no-such-package-for-the-check is not installed (want 1.0)" in message
    assert "is installed, 0.0.1 is pinned" in message and "mlflow" not in message.split(".venv")[0]
    assert message.endswith("Fix with: .venv/bin/pip install -r requirements.txt (or `make setup`)")


def test_asking_the_bot_from_the_shell_answers_logs_and_refuses_an_empty_question(deployed):
    from mlops.monitoring.inference_log import read_log

    def ask(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mlops.chatbot", *words], env=cli_env(deployed), capture_output=True, text=True,
            timeout=120, cwd=PROJ_ROOT,
        )  # fmt: skip

    answered = ask("hello", "there!")
    assert answered.returncode == 0 and "intent: greeting" in answered.stdout, answered.stderr
    logged = len(read_log(deployed.inference_log_url))
    assert logged >= 1
    for empty in ([""], ["   ", ""]):
        refused = ask(*empty)
        assert refused.returncode == 2 and "the question is empty" in refused.stderr
    assert len(read_log(deployed.inference_log_url)) == logged  # nothing logged for a refused question
