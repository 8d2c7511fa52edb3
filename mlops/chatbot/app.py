"""Streamlit chat UI of the deployed chatbot, on 127.0.0.1:8501.

    streamlit run mlops/chatbot/app.py --server.address 127.0.0.1 --server.port 8501

Every answer shows its intent, confidence and sources, is written to the inference log, and takes a
thumbs up/down that is stored with it (the monitoring dashboard's live accuracy).
"""

from __future__ import annotations

import os

import streamlit as st

from mlops.chatbot.bot import DeploymentError, TravelChatbot
from mlops.config import ConfigError, load_settings
from mlops.monitoring.inference_log import InferenceLog

EXAMPLES = ("Where can I see leopards in Sri Lanka?", "Best time to visit Kyoto?", "Cheap beach destinations in Asia")


@st.cache_resource
def resources(config_dir: str | None) -> tuple[TravelChatbot, InferenceLog]:
    """The bot and its log, loaded once per configuration (the argument is the cache key)."""
    settings = load_settings()
    bot = TravelChatbot.load(settings.models_dir)
    return bot, InferenceLog.from_settings(settings, bot.versions)


def show_answer(turn: dict, log: InferenceLog) -> None:
    result = turn["result"]
    with st.chat_message("assistant"):
        st.text(result["answer"])  # plain text: nothing from a query or the data is rendered as markup
        st.caption(
            f"intent: {result['intent']} · confidence {result['confidence']:.2f} · {result['latency_ms']:.1f} ms"
        )
        if result["sources"]:
            st.caption("sources: " + "; ".join(f"{s['name']} ({s['score']:.2f})" for s in result["sources"]))
        choice = st.feedback("thumbs", key=f"feedback-{turn['request_id']}")
        if choice is not None and not turn.get("feedback_saved"):
            log.feedback(turn["request_id"], 1 if choice == 1 else -1)
            turn["feedback_saved"] = True


def main() -> None:
    st.set_page_config(page_title="Travel advisor", page_icon="🧭")
    st.title("Travel advisor")
    try:
        bot, log = resources(os.environ.get("MLOPS_CONFIG_DIR"))
    except (DeploymentError, ConfigError) as exc:
        st.error(str(exc))
        st.info("Deploy the models first: `make run` (or `python mlops/scripts/deploy_chatbot_models.py`).")
        st.stop()
    st.caption(
        "Versions: " + ", ".join(f"{key} v{version}" for key, version in sorted(bot.versions.items()))
        + " · try: " + " · ".join(EXAMPLES)
    )  # fmt: skip
    turns = st.session_state.setdefault("turns", [])
    for turn in turns:
        with st.chat_message("user"):
            st.text(turn["query"])
        show_answer(turn, log)
    if query := st.chat_input("Ask about a destination, the best time to go, visas, budgets..."):
        bot.refresh()  # a new deployment (or a rollback) is picked up here; a broken one is refused and logged
        result, versions = bot.answer(query)
        record = {"query": query, "versions": versions, **result}
        turns.append({"query": query, "result": result, "request_id": log.record(record)})
        st.rerun()


main()
