"""MLflow "model from code" of the whole bot, registered as ``travel_chatbot``.

    mlflow models serve -m models:/travel_chatbot@champion --env-manager local --workers 2

Each model file is verified against the sha256 recorded at logging time before it is unpickled.

``predict`` returns a DataFrame (``answer``, ``intent``, ``confidence``, ``sources``) to Python callers.
Inside MLflow's scoring server it returns the same rows as a list of dicts: the server turns a
DataFrame into exactly that list with ``DataFrame.to_dict("records")``, and building the frame plus
that conversion cost ~0.7 ms of the ~1.7 ms the server spent per one-query request (pandas 3), i.e.
more than answering the query. The JSON the client receives is byte for byte the same.

With ``--workers 2`` uvicorn binds the listening socket itself with ``proto=0``; asyncio enables
``TCP_NODELAY`` only on sockets whose ``proto`` is ``IPPROTO_TCP``, so every keep-alive response
then waits ~40 ms for the client's delayed ACK (Nagle; uvicorn issue #3149, open). Loading this
model makes asyncio set ``TCP_NODELAY`` on every TCP stream socket it wraps, which is what asyncio
intends anyway; without it ``--workers 2`` served 80 requests/s instead of several hundred.
"""

from __future__ import annotations

import asyncio.base_events
import json
import os
import socket
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

COLUMNS = ("answer", "intent", "confidence", "sources")
# set to "true" by mlflow.pyfunc.scoring_server.init() in the serving process (mlflow 3.x)
SERVING_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"


def input_texts(model_input) -> list[str]:
    """The queries of a one-column DataFrame (what the signature enforces), a Series or a list."""
    if hasattr(model_input, "columns"):
        model_input = model_input[model_input.columns[0]]
    values = model_input.tolist() if hasattr(model_input, "tolist") else list(model_input)
    return [value if isinstance(value, str) else str(value) for value in values]


def in_scoring_server() -> bool:
    return os.environ.get(SERVING_FLAG, "").lower() == "true"


# asyncio's own function, even when another copy of this module (MLflow loads this file as model code) replaced it
ASYNCIO_SET_NODELAY = getattr(asyncio.base_events._set_nodelay, "asyncio_original", asyncio.base_events._set_nodelay)


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_set_nodelay.asyncio_original = ASYNCIO_SET_NODELAY


def enable_nodelay_on_prebound_sockets() -> None:
    """Have asyncio set ``TCP_NODELAY`` on accepted TCP sockets whatever their ``proto`` (idempotent)."""
    if hasattr(socket, "TCP_NODELAY"):
        asyncio.base_events._set_nodelay = _set_nodelay


class TravelChatbotModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import pickle

        enable_nodelay_on_prebound_sockets()  # the scoring server loads the model before it accepts

        from mlops.chatbot.bot import TravelChatbot, verified_path

        models = {}
        for key, expected in context.model_config["sha256"].items():
            path = Path(context.artifacts[key])
            with open(verified_path(path.parent, path.name, expected), "rb") as handle:
                models[key] = pickle.load(handle)
        self.bot = TravelChatbot(models, {"models": context.model_config.get("versions", {})})

    def predict(self, context, model_input: pd.DataFrame, params=None):  # pandas: no type-hint validation
        records = []
        for text in input_texts(model_input):
            r = self.bot.process_query(text)
            records.append(
                {"answer": r["answer"], "intent": r["intent"], "confidence": r["confidence"],
                 "sources": json.dumps(r["sources"])}
            )  # fmt: skip
        if in_scoring_server():
            return records  # serialised by the server exactly as the DataFrame's records would be

        return pd.DataFrame.from_records(records, columns=list(COLUMNS))


set_model(TravelChatbotModel())
