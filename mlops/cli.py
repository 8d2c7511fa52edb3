"""What every command-line entry point shares: logging set-up, progress display, exit codes.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (data, config, arguments, or a deployment
that is missing or fails its integrity checks), 3 refused (a quality gate or a lock said no),
4 a service could not start (port in use, crashed, never healthy), 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mlops.chatbot.bot import DeploymentError
from mlops.config import ConfigError
from mlops.data import DataValidationError
from mlops.services import ServiceError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_SERVICE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

logger = logging.getLogger(__name__)


class Refused(RuntimeError):
    """An operation was refused for a stated reason (quality gate, lock held...)."""


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr through rich when it is a terminal, plain lines otherwise."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if level != "DEBUG":  # MLflow configures its own loggers from this variable when first imported
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    handlers: list[logging.Handler]
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handlers = [RichHandler(show_path=False, rich_tracebacks=False)]
        fmt = "%(message)s"
    else:
        handlers = [logging.StreamHandler(sys.stderr)]
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=handlers, force=True)
    for noisy in ("mlflow", "alembic", "urllib3", "sentence_transformers", "transformers", "httpx", "datasets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class StepPrinter:
    """Prints each step with the time the previous one took; the progress display of long work."""

    def __init__(self, stream=None, clock: Callable[[], float] = time.perf_counter):
        self.stream = stream or sys.stdout
        self.clock = clock
        self.started = clock()
        self._last: tuple[str, float] | None = None

    def __call__(self, message: str) -> None:
        self._close_last()
        self._last = (message, self.clock())
        print(f"→ {message} ...", file=self.stream, flush=True)

    def _close_last(self) -> None:
        if self._last:
            name, tic = self._last
            print(f"  ✓ {name} ({self.clock() - tic:.1f}s)", file=self.stream, flush=True)
            self._last = None

    def done(self) -> float:
        self._close_last()
        return self.clock() - self.started


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn the library's errors into one clear line on stderr and the documented exit code."""
    try:
        yield
    except (DataValidationError, ConfigError, DeploymentError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Refused as exc:
        reasons = getattr(exc, "reasons", None) or [str(exc)]
        print("refused: " + "\n  ".join(reasons), file=sys.stderr)
        print("nothing deployed changed; the last good deployment keeps serving", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_SERVICE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # the last line of defence of a CLI: say what failed, exit non-zero
        logger.debug("unexpected failure", exc_info=True)
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
