"""A perfcast model as an MLflow pyfunc whose code is the *installed* perfcast: MLflow's ``loader_module``.

Why a loader module: a logged model that carries code (a pickled object, or a "models from code" file)
is executed by whoever loads it, and no checksum of the bundle covers it. A perfcast model is logged with
``loader_module="perfcast.mlflow_model"`` and the bundle as its data (``data/bundle`` in the model), no
code paths: MLflow imports this module from the perfcast installed where the model is loaded and calls
:func:`_load_pyfunc` on the bundle, which :class:`~perfcast.predictor.Predictor` reads as data and verifies
by its manifest's checksums. So ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` trust exactly what
``Predictor.load`` trusts. ``/invocations`` answers with what ``Predictor.predict`` returns (an optional
``level`` parameter sets the interval level); a bad request is answered with perfcast's one-line message.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST

from perfcast.features import MissingColumnError, UnknownDeviceError
from perfcast.predictor import Predictor

#: what a request can get wrong; anything else is a server fault and keeps MLflow's own report
_REQUEST_ERRORS = (ValueError, MissingColumnError, UnknownDeviceError)


class PerfcastPyfunc:
    """Rows of configurations in, predictions with intervals and OOD flags out (MLflow's pyfunc protocol)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """MLflow passes the request's rows (a DataFrame once the signature is enforced) and its params."""
        level = (params or {}).get("level")
        try:
            return self.predictor.predict(pd.DataFrame(model_input), level=level)
        except _REQUEST_ERRORS as err:  # the message names the column and row: that, not a traceback
            raise MlflowException(str(err), error_code=BAD_REQUEST) from None


def _load_pyfunc(data_path: str | os.PathLike[str]) -> PerfcastPyfunc:
    """MLflow's entry point: ``data_path`` is the bundle directory inside the downloaded model."""
    return PerfcastPyfunc(Predictor.load(data_path))
