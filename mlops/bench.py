"""Benchmarks: ``python -m mlops.bench [--repeat N] [--only SECTION,...]`` (what ``make bench`` runs).

Sections (``--only`` reruns some of them and replaces just those in the file):

- ``pipeline``: the launchers as subprocesses in fresh, isolated stores, N times each: cold full
  pipeline, cold fast path, warm fast path (nothing changed), deploy alone; the per-model training
  times and held-out metrics of the last cold pipeline (:mod:`mlops.benchmarks.pipeline`).
- ``serving``: in a clean process that imports only the serving code: ``TravelChatbot.load()``,
  ``process_query`` latency and throughput on 1 and 2 threads with the inference log on, RSS,
  deployed size (:mod:`mlops.serving_probe`).
- ``http``: the ``travel_chatbot`` pyfunc behind ``mlflow models serve`` on 127.0.0.1, loaded with
  a bounded number of one-query requests (:mod:`mlops.benchmarks.http_load`).
- ``retrieval``: ``rag_model`` against BM25 and its sparse-only / dense-only ablations
  (:mod:`mlops.benchmarks.retrieval`).
- ``clinc``: the intent and few-shot models on CLINC150 (:mod:`mlops.benchmarks.clinc150`; skipped
  with a note when the data is absent).

The comparison with the original system's claims is rebuilt from all figures on every run. Writes
``docs/BENCHMARKS.md`` with the command, machine, date and load average of every section, keeping
its hand-written "Attempts" section (between the ``ATTEMPTS_START`` and ``ATTEMPTS_END`` markers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mlops.cli import exit_codes, setup_logging
from mlops.config import PROJ_ROOT, Settings
from mlops.training import HEADLINE_METRICS

DOCS = PROJ_ROOT / "docs" / "BENCHMARKS.md"
ATTEMPTS_START, ATTEMPTS_END = "<!-- attempts:start -->", "<!-- attempts:end -->"
FIGURES_RE = re.compile(r"^<!-- figures: (\{.*\}) -->$", re.MULTILINE)
SECTIONS = ("pipeline", "serving", "http", "retrieval", "clinc")
ORDER = ("claims", *SECTIONS)


# ------------------------------------------------------------------------------------ context
def machine() -> str:
    """CPU model, cores, memory, OS and Python of this machine."""
    import psutil

    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), cpu
        )
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {psutil.cpu_count(logical=True)} logical cores, {memory:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def stamp(command: str) -> str:
    """The line that opens every section: when, where, how loaded the machine was, and the command."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {when} on {machine()}; load average (1 / 5 / 15 min) at the start {load_average()} "
        f"(the machine is shared); command `{command}`."
    )


# ------------------------------------------------------------------------------------ sections
def prepare_deployment(workdir: Path) -> Settings:
    """A deployment in an isolated workspace, made by one cold ``simple_mlops.py`` run."""
    from mlops.benchmarks.pipeline import isolated_config, run_step

    settings = isolated_config(workdir / "deployment")
    run_step("cold_fast_path", settings.root / "configs")
    return settings


def deployed_mb(models_dir: Path) -> float:
    """Size of the live release: the files the manifest lists (``releases/`` also keeps the previous one)."""
    manifest = json.loads((Path(models_dir) / "manifest.json").read_text(encoding="utf-8"))
    files = [Path(models_dir) / rel for entry in manifest["models"].values() for rel in entry["files"]]
    return sum(f.stat().st_size for f in files) / 2**20


def bench_serving(settings: Settings, workdir: Path, n: int = 2000) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "mlops.serving_probe", str(settings.models_dir), str(workdir / "probe.db"), str(n)],
        check=True, capture_output=True, text=True, cwd=PROJ_ROOT,
    )  # fmt: skip
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["deployed_mb"] = deployed_mb(settings.models_dir)
    figures["queries"] = n
    return figures


def render_pipeline(fig: dict, command: str) -> str:
    def row(label: str, entry: dict | None, target: str, digits: int = 1) -> str:
        if entry is None:
            return f"| {label} | – | – | – | – | {target} |"
        return (
            f"| {label} | {entry['runs']} | {entry['median']:.{digits}f} | {entry['min']:.{digits}f} | "
            f"{entry['max']:.{digits}f} | {target} |"
        )

    lines = [
        "## Pipeline: the launchers as a user runs them",
        "",
        stamp(command),
        "",
        "Each command is a subprocess (interpreter start-up included) with `MLOPS_CONFIG_DIR` pointing at a",
        "temporary config whose every path (SQLite store, artifacts, models, results, logs) is in a fresh",
        "temporary folder, and no `MLFLOW_*` variables. *Inside* is the time the command reports for its own",
        "work (fast path: its summary line; deploy: the deployment report), i.e. without start-up and imports.",
        "",
        "| step | runs | median (s) | min (s) | max (s) | target |",
        "| --- | --- | --- | --- | --- | --- |",
        row("cold full pipeline `python mlops_pipeline.py --no-launch`", fig["cold_pipeline"]["wall"], "≤ 90 s"),
        row("… of which training + MLflow logging (results JSON)", fig["training_with_logging"], "–"),
        row("cold fast path `python simple_mlops.py` (empty store)", fig["cold_fast_path"]["wall"], "≤ 90 s"),
        row("warm fast path `python simple_mlops.py`, nothing changed", fig["warm_fast_path"]["wall"], "≤ 10 s"),
        row("… inside the command", fig["warm_fast_path"]["inner"], "–", 2),
        row("deploy alone `python mlops/scripts/deploy_chatbot_models.py --force`", fig["deploy"]["wall"], "≤ 5 s"),
        row("… inside the command", fig["deploy"]["inner"], "–", 2),
        "",
        f"The warm fast path reused every model in every run: {fig['warm_reused_all']}.",
        "",
        "Per model (last cold pipeline; seconds to train, excluding logging; held-out test split):",
        "",
        "| model | train time (s) | held-out metrics |",
        "| --- | --- | --- |",
    ]
    for key, entry in fig["training_results"].items():
        shown = ", ".join(f"{m} {entry['metrics'][m]:.3f}" for m in HEADLINE_METRICS[key] if m in entry["metrics"])
        lines.append(f"| {key} | {entry['training_time_s']:.1f} | {shown} |")
    return "\n".join(lines) + "\n"


def render_serving(fig: dict, command: str) -> str:
    lines = [
        f"## Serving in-process (fresh process, inference log on, {fig.get('queries', 2000):,} queries per run)",
        "",
        stamp(command),
        "",
        "The probe imports only what a serving process imports. The 2-thread run shares one bot and one",
        "inference log between two threads (latency there includes waiting for the GIL).",
        "",
        "| figure | 1 thread | 2 threads | target |",
        "| --- | --- | --- | --- |",
        f"| `process_query` p50 | {fig['p50_ms']:.2f} ms | {fig['p50_ms_2_threads']:.2f} ms | ≤ 2 ms |",
        f"| `process_query` p95 | {fig['p95_ms']:.2f} ms | {fig['p95_ms_2_threads']:.2f} ms | – |",
        f"| `process_query` p99 | {fig['p99_ms']:.2f} ms | {fig['p99_ms_2_threads']:.2f} ms | ≤ 10 ms |",
        f"| throughput | {fig['qps_1_thread']:,.0f} queries/s | {fig['qps_2_threads']:,.0f} queries/s | – |",
        "",
        "| figure | measured | target |",
        "| --- | --- | --- |",
        f"| `TravelChatbot.load()` | {fig['load_s']:.3f} s | ≤ 1 s |",
        f"| process RSS after both runs | {fig['rss_mb']:.0f} MB | ≤ 250 MB |",
        f"| deployed model files (live release) | {fig['deployed_mb']:.1f} MB | ≤ 50 MB |",
        f"| rows in the inference log | {fig['logged_rows']:,} | every query |",
        f"| torch / scikit-learn imported | {fig['torch_loaded']} / {fig['sklearn_loaded']} | False |",
    ]
    return "\n".join(lines) + "\n"


def render_http(rows: list[dict], command: str, requests: int, concurrency: int) -> str:
    lines = [
        "## Serving over HTTP (`mlflow models serve`, the `travel_chatbot` pyfunc)",
        "",
        stamp(command),
        "",
        "`mlflow models serve -m models:/travel_chatbot@champion --env-manager local --host 127.0.0.1",
        "--workers N`, started and stopped by PID for each N. The load generator (stdlib `http.client`, one",
        f"keep-alive connection per thread, {concurrency} connections) sends {requests:,} requests after",
        '200 warm-up ones, each one query as `{"dataframe_split": {"columns": ["text"], "data": [[q]]}}`.',
        "It runs on the same 2 cores as the server, so the figures are one box end to end. RSS: the whole",
        "server process tree (the `mlflow models serve` CLI stays alive as uvicorn's parent; with N > 1 a",
        "uvicorn supervisor and N workers), one serving worker, and the CLI parent alone.",
        "",
        "| workers | requests | errors | req/s | p50 (ms) | p95 (ms) | p99 (ms) | RSS tree / worker / CLI (MB) "
        "| start-up (s) | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['requests']:,} | {r['errors']} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['server_rss_mb']:.0f} / {r['worker_rss_mb']:.0f} / "
            f"{r['cli_rss_mb']:.0f} | {r['startup_s']:.1f} | ≥ 300 req/s |"
        )
    if any(r["first_error"] for r in rows):
        lines += ["", "First errors: " + "; ".join(f"{r['workers']}: {r['first_error']}" for r in rows)]
    return "\n".join(lines) + "\n"


def render_retrieval(tables: dict[str, list[dict]], command: str) -> str:
    from mlops.benchmarks import retrieval

    lines = [
        "## Retrieval: `rag_model` against BM25 and its ablations",
        "",
        stamp(command),
        "",
        "Every method ranks the same 295 documents `rag_model` indexes (both knowledge-base CSVs, via",
        "`build_documents`). The `rag_model` rows are the deployed numpy twin (what serves) with its fusion",
        "weights changed for the ablations; BM25 is `rank_bm25.BM25Okapi` over normalised, accent-folded,",
        "stop-word-filtered, plural-stripped word tokens. hit@1 / hit@3 / MRR as in training (first relevant",
        "document counts); latency is one query at a time (score every document, sort), in-process.",
        "",
    ]
    for split, rows in tables.items():
        queries = rows[0]["queries"] if rows else 0
        lines += [f"**{split} split** ({queries} queries):", "", retrieval.render_table(rows)]
    return "\n".join(lines)


def render_clinc(rows: list[dict], seconds: float, skipped: str, command: str) -> str:
    from mlops.benchmarks import clinc150

    lines = ["## Intent model on CLINC150", ""]
    if skipped:
        return "\n".join([*lines, skipped, ""])
    full = {row["method"]: row for row in rows if row["setting"] == "full" and row["method"] in clinc150.METHODS}
    lines += [
        f"{stamp(command)} ({seconds:.0f} s in all)",
        "",
        "The intent model is built by the same code with the same `llm_model` settings as the deployed one;",
        "trained on CLINC150's train",
        "split (plus `oos_train` for oos-train), its out-of-scope threshold tuned on val only, scored once on",
        "test. In-scope accuracy over the 150 intents and out-of-scope recall on the 1,000 `oos_test`",
        "queries, in %. Training time covers fit + threshold tuning (Full / Small); serving size is the",
        "pickled numpy twin that would be deployed. Paper rows: Larson et al., EMNLP 2019, Table 2.",
        "",
        clinc150.render_table(rows),
    ]
    if "oos-train" in full:
        row = full["oos-train"]
        met = row["in_scope_accuracy"] >= 0.95 and row["oos_recall"] >= 0.55 and row["train_s"] <= 120
        lines += [
            f"Target on Full (oos-train): in-scope accuracy ≥ 95.0, OOS recall ≥ 55.0, training ≤ 120 s — "
            f"measured {100 * row['in_scope_accuracy']:.1f} / {100 * row['oos_recall']:.1f} / "
            f"{row['train_s']:.0f} s: {'met' if met else 'not met'}.",
            "",
        ]
    few = clinc150.render_few_shot(rows)
    if few:
        lines += [
            "Few-shot model on Full: an embedding model trained from scratch by the project's embedding trainer",
            "on 16 labelled examples per intent (the tokenizer and character TF-IDF see the whole train split",
            "unlabelled), prototypes from k examples per intent (mean of the config's draws), in-scope test",
            "accuracy over the 150 intents (no out-of-scope):",
            "",
            few,
        ]
    return "\n".join(lines)


def bench_clinc(settings_names: list[str], few_shot: bool = True) -> tuple[list[dict], float, str]:
    """The CLINC150 benchmark: its rows and seconds, or no rows and the reason it was skipped."""
    from mlops.benchmarks import clinc150
    from mlops.config import load_settings

    data_dir = clinc150.resolve_data_dir()
    if not (data_dir / clinc150.FILES["full"]).is_file():
        return [], 0.0, clinc150.missing_message(data_dir)
    tic = time.perf_counter()
    rows = clinc150.run_benchmark(data_dir, load_settings(), settings_names, few_shot)
    return rows, time.perf_counter() - tic, ""


def render_claims(figures: dict) -> str:
    from mlops.benchmarks.claims import render_table

    return "\n".join(
        [
            "## Against the original system's claims",
            "",
            "Each figure comes from the section below that measures it (commands, machines and dates there); the",
            "original system's claims are from its README. Accuracy figures are on this project's held-out",
            "test splits.",
            "",
            render_table(figures),
        ]
    )


# ------------------------------------------------------------------------------------ the file
def kept_attempts(path: Path) -> str:
    """The hand-maintained Attempts section of the existing file, markers included ("" when none)."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(ATTEMPTS_START), text.find(ATTEMPTS_END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(ATTEMPTS_END)] + "\n"


def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- section:{name}:start -->", f"<!-- section:{name}:end -->"


def kept_sections(path: Path) -> tuple[dict[str, str], dict]:
    """The generated sections of the existing file (by name) and the figures recorded in it."""
    if not path.exists():
        return {}, {}
    text = path.read_text(encoding="utf-8")
    sections = {}
    for name in ORDER:
        start, end = section_markers(name)
        i, j = text.find(start), text.find(end)
        if 0 <= i < j:
            sections[name] = text[i + len(start) : j].strip("\n") + "\n"
    match = FIGURES_RE.search(text)
    return sections, json.loads(match.group(1)) if match else {}


def compose(sections: dict[str, str], figures: dict, attempts: str) -> str:
    """The whole file: title, how to rerun, every section in order (markers kept), figures, attempts."""
    parts = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (= `.venv/bin/python -m mlops.bench`; `--only pipeline,serving,http,",
        "retrieval,clinc` reruns some sections and keeps the others). Each section says when, on what",
        "machine, under what load and with which command its figures were measured.",
        "",
    ]
    for name in ORDER:
        if name in sections:
            start, end = section_markers(name)
            parts += [start, sections[name].rstrip("\n"), end, ""]
    parts += [f"<!-- figures: {json.dumps(figures, sort_keys=True)} -->", ""]
    text = "\n".join(parts)
    return text + ("\n" + attempts if attempts else "")


def run_sections(args, workdir: Path, say: Callable[[str], None]) -> tuple[dict[str, str], dict]:
    """Run the selected sections; returns their markdown and their figures."""
    from mlops.benchmarks import http_load, retrieval
    from mlops.benchmarks.pipeline import bench_pipeline
    from mlops.serving_probe import SERVING_QUERIES

    only, texts, figures = args.only, {}, {}
    settings = None
    if "pipeline" in only:
        say(f"pipeline: {args.repeat} round(s) of cold pipeline, cold + warm fast path, deploy")
        cmd = f"python -m mlops.bench --only pipeline --repeat {args.repeat}"
        figures["pipeline"], settings = bench_pipeline(args.repeat, workdir, say)
        texts["pipeline"] = render_pipeline(figures["pipeline"], cmd)
    if settings is None and {"serving", "http", "retrieval"} & set(only):
        say("a deployment to measure: one cold `simple_mlops.py` in a temporary store")
        settings = prepare_deployment(workdir)
    if "serving" in only:
        say("serving: in-process probe")
        figures["serving"] = bench_serving(settings, workdir)
        texts["serving"] = render_serving(figures["serving"], "python -m mlops.bench --only serving")
    if "http" in only:
        say(f"http: mlflow models serve with --workers {' and '.join(map(str, args.http_workers))}")
        rows = http_load.bench_http(
            settings.tracking_uri,
            SERVING_QUERIES,
            args.http_requests,
            args.http_concurrency,
            args.http_workers,
            workdir,
        )
        figures["http"] = {
            "rows": rows,
            "best_rps": max((r["rps"] for r in rows if r["errors"] == 0), default=0.0),
            "worker_rss_mb": max((r["worker_rss_mb"] for r in rows), default=0.0),
        }
        cmd = (
            f"python -m mlops.benchmarks.http_load --requests {args.http_requests} --concurrency "
            f"{args.http_concurrency} --workers {' '.join(map(str, args.http_workers))}"
        )
        texts["http"] = render_http(rows, cmd, args.http_requests, args.http_concurrency)
    if "retrieval" in only:
        say("retrieval: rag_model vs BM25 and ablations")
        tables = {
            split: retrieval.run_benchmark(settings.models_dir, settings.data_dir, split) for split in ("test", "dev")
        }
        figures["retrieval"] = tables
        texts["retrieval"] = render_retrieval(tables, "python -m mlops.benchmarks.retrieval --split test (and dev)")
    names = [name for name in args.clinc_settings if name]
    if "clinc" in only and names:
        say(f"clinc: CLINC150 {' '.join(names)}")
        rows, seconds, skipped = bench_clinc(names)
        texts["clinc"] = render_clinc(
            rows, seconds, skipped, f"python -m mlops.benchmarks.clinc150 --settings {' '.join(names)}"
        )
    return texts, figures


def main(argv: list[str] | None = None) -> None:
    from mlops.cli import StepPrinter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each pipeline step (default 3)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run (default all: {SECTIONS})")
    parser.add_argument("--output", type=Path, default=DOCS, help="markdown file to write")
    parser.add_argument("--clinc-settings", nargs="*", default=["full", "small"], help="CLINC150 settings ('' skips)")
    parser.add_argument("--http-requests", type=int, default=3000, help="requests per worker count (default 3000)")
    parser.add_argument("--http-concurrency", type=int, default=4, help="client connections (default 4)")
    parser.add_argument("--http-workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    with exit_codes():
        setup_logging("WARNING")
        steps = StepPrinter()
        with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
            texts, figures = run_sections(args, Path(tmp), steps)
        steps.done()
        sections, old_figures = kept_sections(args.output)
        merged = {**old_figures, **figures}
        sections.update(texts)
        sections["claims"] = render_claims(merged)
        text = compose(sections, merged, kept_attempts(args.output))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(text)


if __name__ == "__main__":
    main()
