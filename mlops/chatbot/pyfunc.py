"""MLflow "model from code" of the whole bot, registered as ``travel_chatbot``.

    mlflow models serve -m models:/travel_chatbot@champion --env-manager local

Each model file is verified against the sha256 recorded at logging time before it is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
from mlflow.models import set_model


class TravelChatbotModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import pickle

        from mlops.chatbot.bot import TravelChatbot, verified_path

        models = {}
        for key, expected in context.model_config["sha256"].items():
            path = Path(context.artifacts[key])
            with open(verified_path(path.parent, path.name, expected), "rb") as handle:
                models[key] = pickle.load(handle)
        self.bot = TravelChatbot(models, {"models": context.model_config.get("versions", {})})

    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = model_input.iloc[:, 0].astype(str).tolist() if hasattr(model_input, "iloc") else list(model_input)
        rows = [self.bot.process_query(text) for text in texts]
        return pd.DataFrame(
            {
                "answer": [r["answer"] for r in rows],
                "intent": [r["intent"] for r in rows],
                "confidence": [r["confidence"] for r in rows],
                "sources": [json.dumps(r["sources"]) for r in rows],
            }
        )


set_model(TravelChatbotModel())
