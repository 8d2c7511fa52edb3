"""The original system's claims next to what we measure, each with our target and met / not met."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

_COMPARE: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Claim:
    """One claim of the original system and the figure that checks it.

    Args:
        what: What is measured.
        original: The original system's claim, as it was stated.
        key: Where the measured value is in the figures (dotted path).
        op: ``"<="`` (smaller is better) or ``">="``.
        target: Our target; met when ``measured op target``.
        unit: Shown after numbers (``"s"``, ``"MB"``...; ``"%"`` shows a fraction as a percentage).
        how: How the figure was measured (one short phrase).
    """

    what: str
    original: str
    key: str
    op: str
    target: float
    unit: str
    how: str

    def measured(self, figures: Mapping) -> float | None:
        value: object = figures
        for part in self.key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def met(self, figures: Mapping) -> bool | None:
        """True / False, or None when the figure was not measured."""
        value = self.measured(figures)
        return None if value is None else _COMPARE[self.op](value, self.target)

    def show(self, value: float, extra_digits: int = 0) -> str:
        if self.unit == "%":
            return f"{100 * value:.{1 + extra_digits}f} %"
        digits = (2 if abs(value) < 10 else (1 if abs(value) < 100 else 0)) + extra_digits
        return f"{value:,.{digits}f} {self.unit}".strip()

    def shown(self, value: float) -> str:
        """``value`` rounded, with more digits when rounding would make a miss look like the target."""
        for extra in range(4):
            text = self.show(value, extra)
            if value == self.target or text != self.show(self.target, extra):
                return text
        return text


CLAIMS: tuple[Claim, ...] = (
    Claim("training (cold full pipeline, CLI)", "~5 min", "pipeline.cold_pipeline.wall.median", "<=", 90, "s",
          "`mlops_pipeline.py --no-launch`, empty store, median"),
    Claim("deployment (CLI)", "< 30 s", "pipeline.deploy.wall.median", "<=", 5, "s",
          "`deploy_chatbot_models.py --force`, median"),
    Claim("response time p50 (in-process)", "< 2 s", "serving.p50_ms", "<=", 2, "ms",
          "`process_query`, inference log on, 1 thread"),
    Claim("response time p99 (in-process)", "< 2 s", "serving.p99_ms", "<=", 10, "ms",
          "`process_query`, inference log on, 1 thread"),
    Claim("throughput over HTTP", "> 100 req/s", "http.best_rps", ">=", 300, "req/s",
          "`mlflow models serve`, loopback, best worker count"),
    Claim("memory at inference", "~200 MB", "serving.rss_mb", "<=", 250, "MB", "RSS of a process serving the bot"),
    Claim("memory at inference, HTTP worker", "~200 MB", "http.worker_rss_mb", "<=", 250, "MB",
          "RSS of one `mlflow models serve` worker (MLflow, FastAPI, pandas loaded)"),
    Claim("model files", "~50 MB", "serving.deployed_mb", "<=", 50, "MB", "files of the live release (manifest)"),
    Claim("llm_model accuracy", "82 %", "pipeline.training_results.llm_model.metrics.accuracy", ">=", 0.95, "%",
          "17 intents incl. out_of_scope, test split"),
    Claim("rag_model hit@3", "87 %", "pipeline.training_results.rag_model.metrics.hit_at_3", ">=", 0.90, "%",
          "retrieval test split"),
    Claim("rag_model MRR", "87 %", "pipeline.training_results.rag_model.metrics.mrr", ">=", 0.80, "%",
          "retrieval test split"),
    Claim("embedding_model triplet accuracy", "85 %",
          "pipeline.training_results.embedding_model.metrics.triplet_accuracy", ">=", 0.90, "%", "test triplets"),
    Claim("few_shot_model accuracy (k = 8)", "79 %", "pipeline.training_results.few_shot_model.metrics.accuracy_k8",
          ">=", 0.85, "%", "mean of 5 draws, test split"),
)  # fmt: skip


def render_table(figures: Mapping, claims: Sequence[Claim] = CLAIMS) -> str:
    """Markdown table: claim, original figure, measured, target, met / not met / not measured."""
    lines = [
        "| figure | original claim | measured | our target | met? | how |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for claim in claims:
        value, met = claim.measured(figures), claim.met(figures)
        shown = "–" if value is None else claim.shown(value)
        verdict = "not measured" if met is None else ("met" if met else "**not met**")
        target = f"{'≤' if claim.op == '<=' else '≥'} {claim.show(claim.target)}"
        lines.append(f"| {claim.what} | {claim.original} | {shown} | {target} | {verdict} | {claim.how} |")
    return "\n".join(lines) + "\n"
