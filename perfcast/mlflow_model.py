"""A perfcast model as an MLflow pyfunc, logged as *models from code*: this file is the model's code.

Why from code: MLflow otherwise pickles the Python model object, and MLflow 3 (rightly) refuses to unpickle
it unless told to. Here MLflow copies this file into the logged model and runs it on load; the model itself
is the perfcast bundle directory in the model's artifacts (``bundle``), read as data by
:class:`~perfcast.predictor.Predictor`. So ``mlflow models serve -m models:/NAME/1 --env-manager local``
answers ``/invocations`` with exactly what ``Predictor.predict`` returns (an optional ``level`` parameter
sets the interval level).
"""

from __future__ import annotations

import mlflow
import pandas as pd

from perfcast.predictor import BUNDLE_ARTIFACT, Predictor


class PerfcastPyfunc(mlflow.pyfunc.PythonModel):
    """Rows of configurations in, predictions with intervals and OOD flags out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = Predictor.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 (MLflow reads type hints as a schema)
        level = (params or {}).get("level")
        return self.predictor.predict(pd.DataFrame(model_input), level=level)


mlflow.models.set_model(PerfcastPyfunc())
