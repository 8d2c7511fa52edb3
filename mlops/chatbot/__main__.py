"""Ask the deployed chatbot one question: ``python -m mlops.chatbot "Where can I see leopards in Sri Lanka?"``."""

from __future__ import annotations

import argparse
import sys

from mlops.chatbot.bot import DeploymentError, TravelChatbot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("query", nargs="+", help="the question")
    parser.add_argument("--models-dir", default=None, help="deployment folder (default: from deployment_config.yaml)")
    args = parser.parse_args(argv)
    models_dir = args.models_dir
    if models_dir is None:
        from mlops.config import load_settings

        models_dir = load_settings().models_dir
    try:
        bot = TravelChatbot.load(models_dir)
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = bot.process_query(" ".join(args.query))
    print(result["answer"])
    print(f"\nintent: {result['intent']} (confidence {result['confidence']:.2f}), {result['latency_ms']:.1f} ms")
    for source in result["sources"]:
        print(f"  source: {source['name']} ({source['location']}), score {source['score']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
