"""Ask the deployed chatbot one question: ``python -m mlops.chatbot "Where can I see leopards in Sri Lanka?"``."""

from __future__ import annotations

import argparse
import sys

from mlops.chatbot.bot import DeploymentError, TravelChatbot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.chatbot", description=__doc__)
    parser.add_argument("query", nargs="+", help="the question")
    parser.add_argument("--models-dir", default=None, help="deployment folder (default: from deployment_config.yaml)")
    parser.add_argument("--no-log", action="store_true", help="do not write the query to the inference log")
    args = parser.parse_args(argv)
    query = " ".join(args.query)
    if not query.strip():
        parser.error('the question is empty; ask something, e.g. "best time to visit Ella?"')  # exit 2, not logged
    from mlops.config import ConfigError, load_settings
    from mlops.monitoring.inference_log import InferenceLog, LogSchemaError

    try:
        settings = load_settings()
        bot = TravelChatbot.load(args.models_dir or settings.models_dir)
        log = None if args.no_log else InferenceLog.from_settings(settings, bot.versions)
    except (ConfigError, DeploymentError, LogSchemaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bot.on_response = log
    result = bot.process_query(query)
    if log is not None:
        log.close()
    print(result["answer"])
    print(f"\nintent: {result['intent']} (confidence {result['confidence']:.2f}), {result['latency_ms']:.1f} ms")
    for source in result["sources"]:
        print(f"  source: {source['name']} ({source['location']}), score {source['score']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
