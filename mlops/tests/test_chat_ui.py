"""The Streamlit chat UI: AppTest for the logic, a real Streamlit server and headless Chromium for what renders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from mlops.config import PROJ_ROOT
from mlops.deployment import deploy
from mlops.monitoring.inference_log import feedback_table, read_log
from mlops.training import run_training

from .conftest import READY, free_port, launch_chromium, needs_chromium, wait_for_http
from .test_deployment import settings_for

APP = str(PROJ_ROOT / "mlops" / "chatbot" / "app.py")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("chat")
    settings = settings_for(root, tiny_data_dir)
    run_training(settings)
    deploy(settings)
    return settings


def test_app_without_a_deployment_says_what_to_run(tmp_path, tiny_data_dir, monkeypatch):
    settings = settings_for(tmp_path, tiny_data_dir)
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(settings.root / "configs"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "nothing is deployed" in at.error[0].value
    assert "make run" in at.info[0].value


def test_app_answers_shows_sources_and_logs_the_query(deployed, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(deployed.root / "configs"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.chat_input[0].set_value("<b>Where</b> can I see leopards in Sri Lanka?").run()
    assert not at.exception
    assert at.text[0].value == "<b>Where</b> can I see leopards in Sri Lanka?"  # shown as typed, not as HTML
    assert any(c.value.startswith("intent: ") for c in at.caption)
    assert any(c.value.startswith("sources: ") for c in at.caption)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = read_log(deployed.inference_log_url)
        if len(rows) and rows["query"].iloc[-1].endswith("leopards in Sri Lanka?"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the query never reached the inference log")


@needs_chromium
def test_chat_in_a_real_browser_with_feedback(deployed, tmp_path):
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "MLOPS_CONFIG_DIR": str(deployed.root / "configs")}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.address", "127.0.0.1", "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", server, timeout=60)
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(READY, timeout=30_000)
            page.get_by_test_id("stChatInputTextArea").fill("Where can I see leopards in Sri Lanka?")
            page.keyboard.press("Enter")
            page.get_by_text("intent: ").first.wait_for(timeout=30_000)
            page.wait_for_selector(READY, timeout=30_000)
            shown = page.inner_text('[data-testid="stMainBlockContainer"]')
            assert "Where can I see leopards in Sri Lanka?" in shown and "sources: " in shown
            page.get_by_test_id("stFeedback").locator("button").first.click()
            page.wait_for_selector(READY, timeout=30_000)
            # with a chat input the page scrolls inside stAppScrollToBottomContainer, otherwise inside stMain
            height = page.evaluate(
                "(document.querySelector('[data-testid=stAppScrollToBottomContainer]')"
                " || document.querySelector('[data-testid=stMain]')).scrollHeight"
            )
            page.set_viewport_size({"width": 1100, "height": max(900, height)})
            page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
            browser.close()
        votes = read_log(deployed.inference_log_url, table=feedback_table)
        assert list(votes["value"]) == [1]
        if os.environ.get("SAVE_SCREENSHOTS"):
            shutil.copy(tmp_path / "chat.png", PROJ_ROOT / "docs" / "chat_ui.png")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
