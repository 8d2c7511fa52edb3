"""MLflow "model from code" for our joblib-pickled models (logged by ``mlops.tracking``).

MLflow copies this file into each logged model and runs it on load; the pickle it opens is
refused unless its sha256 equals the one recorded in the model's config when it was logged.
A model logged with its numpy serving twin loads the twin, through the chatbot's restricted
unpickler (serving model classes and numpy/regex pieces only: no scikit-learn, no code run);
one logged before twins existed loads its joblib file.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

from mlops.integrity import sha256_file


class PickledModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        twin = context.artifacts.get("serving")
        if twin and context.model_config.get("serving_sha256"):
            from mlops.chatbot.bot import load_serving_model

            path = _verified(Path(twin), context.model_config["serving_sha256"])
            self.model = load_serving_model(path.read_bytes(), str(path), "retrain it with this version")
            return
        import joblib

        self.model = joblib.load(_verified(Path(context.artifacts["model"]), context.model_config["sha256"]))

    def predict(self, context, model_input: pd.DataFrame, params=None):  # pandas: no type-hint validation
        from mlops.tracking import predict_any

        texts = model_input.iloc[:, 0].astype(str).tolist() if hasattr(model_input, "iloc") else list(model_input)
        return predict_any(self.model, texts)


def _verified(path: Path, expected: str) -> Path:
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual} does not match the logged {expected}; refusing to load")
    return path


set_model(PickledModel())
