"""MLflow "model from code" for our joblib-pickled models (logged by ``mlops.tracking``).

MLflow copies this file into each logged model and runs it on load; the pickle it opens is
refused unless its sha256 equals the one recorded in the model's config when it was logged.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

from mlops.integrity import sha256_file


class PickledModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import joblib

        path = Path(context.artifacts["model"])
        expected = context.model_config["sha256"]
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{path}: sha256 {actual} does not match the logged {expected}; refusing to load")
        self.model = joblib.load(path)

    def predict(self, context, model_input: pd.DataFrame, params=None):  # pandas: no type-hint validation
        from mlops.tracking import predict_any

        texts = model_input.iloc[:, 0].astype(str).tolist() if hasattr(model_input, "iloc") else list(model_input)
        return predict_any(self.model, texts)


set_model(PickledModel())
