"""The MLflow pyfunc wrapper of the S->T generator, logged as "models from code" (MLflow copies this
file into the model and runs it at load time: no cloudpickle of live objects). Kept apart so
importing the library does not import mlflow. Loads for ANY input shape because it rebuilds the
module from the JSON + state_dict."""

from __future__ import annotations

import mlflow.models
import numpy as np
import torch
from mlflow.pyfunc.model import PythonModel  # = mlflow.pyfunc.PythonModel, which mypy cannot see (lazy module)


class TranslatorPyfunc(PythonModel):
    """``predict`` takes normalised slices (N, H, W) in [-1, 1] on the model's grid (H, W multiples
    of 2**levels) and returns the translated slices in [-1, 1]. Whole volumes go through
    :func:`cosmos.translation.conversion.convert_volume`, which uses ``self.translator``."""

    translator = None

    def load_context(self, context) -> None:
        from cosmos.translation.model_io import load_model_dir

        self.translator = load_model_dir(context.artifacts["model_dir"], "cpu")

    def predict(self, context, model_input, params=None):
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        if x.ndim == 2:
            x = x[None]
        with torch.no_grad():
            y = self.translator.generator(x[:, None])[:, 0]
        return y.numpy()


mlflow.models.set_model(TranslatorPyfunc())
