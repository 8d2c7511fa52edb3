"""Code paths of the benchmarks on tiny inputs: BM25, the HTTP load generator, the claims table,
the pipeline benchmark's isolation, the doc writer, and the pyfunc's serving shortcuts."""

from __future__ import annotations

import asyncio.base_events
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from mlops import bench
from mlops.benchmarks import claims, http_load, pipeline, retrieval

DOCS = [
    {"id": "K1", "text": "Kandy . Kandy . Central Province . Temple of the Tooth, lake, botanical gardens"},
    {"id": "G1", "text": "Galle . Galle . Southern Province . Dutch fort, ramparts, beaches and cafés"},
    {"id": "E1", "text": "Ella . Ella . Uva Province . Nine Arch Bridge, tea estates, hiking Little Adam's Peak"},
    {"id": "R1", "text": "Reykjavík . Reykjavík . Iceland . northern lights, geothermal lagoons, whales"},
]


# ------------------------------------------------------------------------------------ BM25
def test_bm25_tokens_fold_accents_drop_stop_words_and_plurals():
    assert retrieval.bm25_tokens("Where are the BEACHES in Reykjavík? cities") == ["beache", "reykjavik", "city"]


def test_bm25_ranks_the_named_place_first_and_metrics_are_fractions():
    ranker = retrieval.BM25Ranker(DOCS)
    queries = ["things to do in galle", "reykjavik northern lights", "temple of the tooth", "tea estates hiking"]
    relevant = [["G1"], ["R1"], ["K1"], ["E1"]]
    top = [ranker.ids[row.argmax()] for row in ranker.scores(queries)]
    assert top == ["G1", "R1", "K1", "E1"]
    scores = retrieval.evaluate(ranker.scores, ranker.ids, queries, relevant)
    assert scores["hit_at_1"] == scores["hit_at_3"] == scores["mrr"] == 1.0
    assert scores["queries"] == 4 and 0 <= scores["p50_ms"] <= scores["p95_ms"]


def test_bm25_metrics_count_misses():
    ranker = retrieval.BM25Ranker(DOCS)
    scores = retrieval.evaluate(ranker.scores, ranker.ids, ["things to do in galle", "kandy lake"], [["E1"], ["K1"]])
    assert scores["hit_at_1"] == 0.5  # galle ranks G1 first, not the (wrongly) labelled E1
    assert 0.5 < scores["mrr"] < 1.0 and all(0.0 <= scores[k] <= 1.0 for k in ("hit_at_1", "hit_at_3", "mrr"))


def test_ablation_copies_the_twin_without_touching_it():
    class Twin:
        dense_weight, name_boost, country_boost = 0.1, 0.3, 0.1

    twin = Twin()
    variant = retrieval.ablation(twin, 1.0, boosts=False)
    assert (variant.dense_weight, variant.name_boost, variant.country_boost) == (1.0, 0.0, 0.0)
    assert (twin.dense_weight, twin.name_boost) == (0.1, 0.3)


# ------------------------------------------------------------------------------------ HTTP load generator
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real server
    received: list[bytes] = []
    delay = 0.0

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        time.sleep(type(self).delay)
        status = 500 if b"bad" in body else 200
        payload = b'{"predictions": []}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def tiny_server():
    handler = type("Handler", (_Handler,), {"received": [], "delay": 0.0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/invocations", handler
    server.shutdown()
    server.server_close()


def test_load_generator_counts_requests_and_errors(tiny_server):
    url, handler = tiny_server
    bodies = [b'{"q": "ok"}', b'{"q": "ok"}', b'{"q": "bad"}']
    result = http_load.run_load(url, bodies, requests=50, concurrency=3)
    assert len(handler.received) == 50 and result.requests == 50  # bounded: exactly as many as asked
    assert result.errors == 16 and result.ok == 34  # tickets 2, 5, ..., 47 carry the failing body
    assert result.first_error == "HTTP 500" and len(result.latencies_ms) == 34
    summary = result.summary()
    assert summary["rps"] == pytest.approx(34 / result.wall_s) and summary["p50_ms"] <= summary["p99_ms"]


def test_load_generator_stops_at_its_deadline(tiny_server):
    url, handler = tiny_server
    handler.delay = 0.1
    tic = time.perf_counter()
    result = http_load.run_load(url, [b"ok"], requests=10_000, concurrency=2, max_seconds=0.5)
    assert time.perf_counter() - tic < 3 and 2 <= result.requests <= 20 and result.errors == 0


def test_load_generator_counts_refused_connections_as_errors():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        result = http_load.run_load(f"http://127.0.0.1:{port}/invocations", [b"x"], requests=7, concurrency=2)
    assert (result.requests, result.ok, result.errors) == (7, 0, 7)
    assert "ConnectionRefused" in result.first_error and result.rps == 0


def test_query_body_is_the_pyfunc_json_input():
    assert json.loads(http_load.query_body("hi")) == {"dataframe_split": {"columns": ["text"], "data": [["hi"]]}}


# ------------------------------------------------------------------------------------ claims
def test_claims_table_marks_met_not_met_and_not_measured():
    fast = claims.Claim("deploy", "< 30 s", "pipeline.deploy", "<=", 5, "s", "cli")
    busy = claims.Claim("throughput", "> 100 req/s", "http.best_rps", ">=", 300, "req/s", "http")
    acc = claims.Claim("accuracy", "82 %", "acc", ">=", 0.95, "%", "test")
    figures = {"pipeline": {"deploy": 5.0}, "http": {"best_rps": 299.9}}
    assert fast.met(figures) is True  # the target itself is met
    assert busy.met(figures) is False and acc.met(figures) is None
    assert claims.Claim("x", "", "v", "<=", 1, "", "").met({"v": True}) is None  # a flag is not a figure
    rows = claims.render_table(figures, [fast, busy, acc]).splitlines()[2:]
    assert rows[0].startswith("| deploy | < 30 s | 5.00 s | ≤ 5.00 s | met |")
    assert "| 299.9 req/s | ≥ 300 req/s | **not met** |" in rows[1]  # not rounded up to the target
    assert "| – | ≥ 95.0 % | not measured |" in rows[2]


def test_every_claim_points_at_a_figure_the_bench_records():
    figures = {
        "pipeline": {"cold_pipeline": {"wall": {"median": 80}}, "deploy": {"wall": {"median": 6}},
                     "training_results": {k: {"metrics": {"accuracy": 0.8, "hit_at_3": 0.9, "mrr": 0.9,
                                                          "triplet_accuracy": 0.9, "accuracy_k8": 0.7}}
                                          for k in ("llm_model", "rag_model", "embedding_model", "few_shot_model")}},
        "serving": {"p50_ms": 1, "p99_ms": 5, "rss_mb": 90, "deployed_mb": 23},
        "http": {"best_rps": 400, "worker_rss_mb": 300},
    }  # fmt: skip
    assert all(claim.met(figures) is not None for claim in claims.CLAIMS)


# ------------------------------------------------------------------------------------ pipeline isolation
def test_isolated_config_keeps_every_path_inside_the_workspace(tmp_path):
    settings = pipeline.isolated_config(tmp_path)
    inside = [settings.models_dir, settings.training.results_dir, Path(settings.tracking_uri.split(":///", 1)[1])]
    assert all(Path(p).resolve().is_relative_to(tmp_path.resolve()) for p in inside)
    env = pipeline.child_env(tmp_path / "configs", {"MLFLOW_TRACKING_URI": "x", "MODEL_PATH": "y", "HOME": "/h"})
    assert env["MLOPS_CONFIG_DIR"] == str(tmp_path / "configs") and env["HOME"] == "/h"
    assert "MLFLOW_TRACKING_URI" not in env and "MODEL_PATH" not in env


def test_deployed_size_counts_the_live_release_only(tmp_path):
    for release, size in (("old", 3000), ("new", 1000)):
        (tmp_path / "releases" / release).mkdir(parents=True)
        (tmp_path / "releases" / release / "m.pkl").write_bytes(b"x" * size)
    manifest = {"models": {"m": {"files": {"releases/new/m.pkl": "0" * 64}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert bench.deployed_mb(tmp_path) == pytest.approx(1000 / 2**20)


# ------------------------------------------------------------------------------------ the doc writer
def test_a_partial_rerun_replaces_only_its_sections_and_keeps_the_attempts(tmp_path):
    doc = tmp_path / "B.md"
    attempts = f"{bench.ATTEMPTS_START}\n## Attempts\nhand-written\n{bench.ATTEMPTS_END}\n"
    doc.write_text(
        bench.compose({"serving": "old serving\n", "http": "old http\n"}, {"http": {"best_rps": 1}}, attempts)
    )
    sections, figures = bench.kept_sections(doc)
    assert sections == {"serving": "old serving\n", "http": "old http\n"} and figures == {"http": {"best_rps": 1}}
    sections["http"] = "new http\n"
    doc.write_text(bench.compose(sections, {**figures, "serving": {"p50_ms": 1}}, bench.kept_attempts(doc)))
    text = doc.read_text()
    assert "old serving" in text and "new http" in text and "old http" not in text
    assert text.rstrip().endswith(bench.ATTEMPTS_END) and text.count("hand-written") == 1
    assert bench.kept_sections(doc)[1] == {"http": {"best_rps": 1}, "serving": {"p50_ms": 1}}


# ------------------------------------------------------------------------------------ pyfunc serving shortcuts
class _StubBot:
    def process_query(self, text):
        return {"answer": f"re: {text}", "intent": "greeting", "confidence": 0.5, "sources": [{"name": "Ella"}],
                "latency_ms": 0.1}  # fmt: skip


def test_pyfunc_gives_the_scoring_server_the_same_json_as_a_dataframe(monkeypatch):
    from mlflow.pyfunc.scoring_server import predictions_to_json

    from mlops.chatbot import pyfunc

    model = pyfunc.TravelChatbotModel()
    model.bot = _StubBot()
    frame_in = pd.DataFrame({"text": ["hello", "ella hikes"]})
    monkeypatch.delenv(pyfunc.SERVING_FLAG, raising=False)
    as_frame = model.predict(None, frame_in)
    assert isinstance(as_frame, pd.DataFrame) and list(as_frame.columns) == list(pyfunc.COLUMNS)
    monkeypatch.setenv(pyfunc.SERVING_FLAG, "true")
    as_records = model.predict(None, frame_in)
    assert isinstance(as_records, list)
    out_frame, out_records = io.StringIO(), io.StringIO()
    predictions_to_json(as_frame, out_frame)
    predictions_to_json(as_records, out_records)
    assert out_frame.getvalue() == out_records.getvalue()
    assert json.loads(out_records.getvalue())["predictions"][1]["answer"] == "re: ella hikes"


def test_pyfunc_load_makes_asyncio_set_nodelay_on_prebound_sockets(monkeypatch):
    from mlops.chatbot import pyfunc

    # asyncio's own function (an earlier test in this process may have loaded the pyfunc); restored after
    monkeypatch.setattr(asyncio.base_events, "_set_nodelay", pyfunc.ASYNCIO_SET_NODELAY)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0) as sock:  # proto 0, as uvicorn binds it
        asyncio.base_events._set_nodelay(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the bug: asyncio skips it
        pyfunc.enable_nodelay_on_prebound_sockets()
        asyncio.base_events._set_nodelay(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
