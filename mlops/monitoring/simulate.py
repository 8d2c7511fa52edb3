"""Traffic simulator: realistic queries through the deployed chatbot, logged like the chat UI logs them.

    python -m mlops.monitoring.simulate --qps 20 --duration 60 [--drift] [--feedback-rate 0.3]

Queries are the project's own intent examples (train and val splits, never the test split the
canary scores) with light variations: case, punctuation, a polite prefix, now and then a typo.
Each answer is written to the inference log through ``InferenceLog.record``; a share of them gets
a thumbs up or down (mostly up when the predicted intent is the expected one). ``--drift`` shifts
the traffic: many out-of-scope queries with words the models never saw, and a skewed intent mix.

Exit codes: 0 done, 2 bad arguments or config, or nothing deployed, 130 interrupted (Ctrl+C).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from mlops.config import Settings
from mlops.taxonomy import OUT_OF_SCOPE

DRIFT_OOS_SHARE = 0.6
DRIFT_INTENTS = ("visa_requirements", "currency_exchange")  # what the rest of drifted traffic asks about
PREFIXES = ("", "", "", "hi, ", "hey ", "please, ", "quick question: ", "can you tell me ")
SUFFIXES = ("", "", "?", "?", "!", " please", " thanks")
# queries no training example looks like: off-topic, with vocabulary the models never saw
UNSEEN_TOPICS = (
    "kubernetes pod eviction", "sourdough starter hydration", "quarterly tax filing", "blockchain staking yields",
    "fantasy football waivers", "mortgage refinancing", "python asyncio deadlocks", "knitting cable patterns",
    "electric guitar pickups", "crypto wallet recovery", "lawn mower carburetor", "chess opening repertoire",
)  # fmt: skip
UNSEEN_TEMPLATES = (
    "how do I fix {t}", "explain {t} to me", "what is the best approach to {t}", "{t} troubleshooting steps",
    "any advice on {t}", "compare options for {t}",
)  # fmt: skip


@dataclass
class SimulationSummary:
    """What a simulation sent and what came back."""

    sent: int = 0
    feedback: int = 0
    oos: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def oos_rate(self) -> float:
        return self.oos / self.sent if self.sent else 0.0

    def line(self) -> str:
        p95 = pd.Series(self.latencies_ms).quantile(0.95) if self.latencies_ms else 0.0
        qps = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (
            f"sent {self.sent} ({qps:.1f} q/s) · out of scope {self.oos_rate:.0%} · "
            f"p95 {p95:.1f} ms · feedback {self.feedback}"
        )


def vary(text: str, rng: random.Random) -> str:
    """A light variation of a query: case, a prefix or suffix, sometimes two letters swapped."""
    if rng.random() < 0.1:
        words = text.split()
        candidates = [i for i, word in enumerate(words) if len(word) > 4 and word.isalpha()]
        if candidates:
            i = rng.choice(candidates)
            j = rng.randrange(1, len(words[i]) - 2)
            word = words[i]
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
            text = " ".join(words)
    if rng.random() < 0.3:
        text = text[:1].upper() + text[1:]
    return rng.choice(PREFIXES) + text.rstrip("?!. ") + rng.choice(SUFFIXES)


class QuerySource:
    """Draws ``(query, expected intent)`` pairs from the intent examples, normal or drifted.

    Args:
        examples: Rows with ``text`` and ``intent`` (train and val splits).
        drift: Shift the mix: ``DRIFT_OOS_SHARE`` unseen off-topic queries, the rest from ``DRIFT_INTENTS``.
        rng: Random source (seeded for reproducible runs).
    """

    def __init__(self, examples: pd.DataFrame, drift: bool, rng: random.Random):
        self.pairs = list(zip(examples["text"], examples["intent"], strict=True))
        self.skewed = [pair for pair in self.pairs if pair[1] in DRIFT_INTENTS] or self.pairs
        self.drift = drift
        self.rng = rng

    def __call__(self) -> tuple[str, str]:
        if not self.drift:
            text, intent = self.rng.choice(self.pairs)
        elif self.rng.random() < DRIFT_OOS_SHARE:
            text, intent = self.rng.choice(UNSEEN_TEMPLATES).format(t=self.rng.choice(UNSEEN_TOPICS)), OUT_OF_SCOPE
        else:
            text, intent = self.rng.choice(self.skewed)
        return vary(text, self.rng), intent


def thumbs(predicted: str, expected: str, rng: random.Random) -> int:
    """A synthetic vote: +1 for the right intent 90 % of the time, -1 for a wrong one 80 % of the time."""
    if predicted == expected:
        return 1 if rng.random() < 0.9 else -1
    return -1 if rng.random() < 0.8 else 1


def simulate(
    bot,
    log,
    source: Callable[[], tuple[str, str]],
    qps: float,
    duration: float,
    feedback_rate: float = 0.3,
    rng: random.Random | None = None,
    progress: Callable[[SimulationSummary], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SimulationSummary:
    """Send ``qps * duration`` queries at ``qps`` through ``bot``, recording each in ``log``.

    Args:
        bot: A loaded ``TravelChatbot``.
        log: An ``InferenceLog`` (``record`` and ``feedback``).
        source: Returns the next ``(query, expected intent)``.
        qps: Queries per second.
        duration: Seconds to run.
        feedback_rate: Share of answers that get a thumbs up or down.
        rng: Random source for the feedback.
        progress: Called about once a second with the running summary.
        clock: Monotonic clock in seconds.
        sleep: Waits between queries.

    Returns:
        The summary; ``interrupted`` is True when Ctrl+C stopped it early.
    """
    rng = rng or random.Random(0)
    total = max(1, round(qps * duration))
    summary = SimulationSummary()
    start = last_progress = clock()
    try:
        for i in range(total):
            delay = start + i / qps - clock()
            if delay > 0:
                sleep(delay)
            query, expected = source()
            result = bot.process_query(query)
            request_id = log.record({"query": query, **result})
            summary.sent += 1
            summary.oos += result["intent"] == OUT_OF_SCOPE
            summary.latencies_ms.append(result["latency_ms"])
            if rng.random() < feedback_rate:
                log.feedback(request_id, thumbs(result["intent"], expected, rng))
                summary.feedback += 1
            if progress is not None and clock() - last_progress >= 1.0:
                last_progress = clock()
                summary.seconds = last_progress - start
                progress(summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = clock() - start
    return summary


def run(settings: Settings, qps: float, duration: float, drift: bool, feedback_rate: float, seed: int,
        progress: Callable[[SimulationSummary], None] | None = None) -> SimulationSummary:  # fmt: skip
    """Load the deployed bot and the intent examples, then simulate into the configured inference log.

    Raises:
        DeploymentError: Nothing is deployed, or the deployment fails its integrity checks.
        DataValidationError: The data files are missing or invalid.
    """
    from mlops.chatbot.bot import TravelChatbot
    from mlops.data import load_datasets
    from mlops.monitoring.inference_log import InferenceLog

    bot = TravelChatbot.load(settings.models_dir)
    examples = load_datasets(settings.data_dir).intents
    rng = random.Random(seed)
    source = QuerySource(examples[examples["split"] != "test"], drift, rng)
    log = InferenceLog(settings.inference_log_url, bot.versions)
    try:
        return simulate(bot, log, source, qps, duration, feedback_rate, rng, progress)
    finally:
        log.close()  # flushes what was queued, also after Ctrl+C


def _positive(value: str) -> float:
    number = float(value)
    if not 0 < number <= 10_000:
        raise argparse.ArgumentTypeError(f"must be in (0, 10000], got {value}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlops.monitoring.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--qps", type=_positive, default=20.0, help="queries per second (default 20)")
    parser.add_argument("--duration", type=_positive, default=60.0, help="seconds to run (default 60)")
    parser.add_argument("--drift", action="store_true", help="shift the traffic: off-topic words, skewed intents")
    parser.add_argument("--feedback-rate", type=_fraction, default=0.3, help="share of answers voted on (0.3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from sqlalchemy.engine import make_url

    from mlops.cli import EXIT_INTERRUPTED, exit_codes, setup_logging
    from mlops.config import load_settings

    args = parse_args(argv)
    setup_logging("WARNING")
    with exit_codes():
        settings = load_settings()

        at_terminal = sys.stderr.isatty()

        def show(summary: SimulationSummary) -> None:  # one line redrawn at a terminal, a line every 10 s in a log
            if at_terminal:
                print(f"\r{summary.line()}", end="", file=sys.stderr, flush=True)
            elif int(summary.seconds) % 10 == 0:
                print(summary.line(), file=sys.stderr, flush=True)

        summary = run(settings, args.qps, args.duration, args.drift, args.feedback_rate, args.seed, show)
        print(f"\r{summary.line()}" if at_terminal else summary.line(), file=sys.stderr)
        where = make_url(settings.inference_log_url).render_as_string(hide_password=True)
        print(f"wrote {summary.sent} queries and {summary.feedback} votes to {where}")
        if summary.interrupted:
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
