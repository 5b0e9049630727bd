"""The log-target wrapper as perfcast saves and serves it: exp of a model fitted on log(y).

Why a class of perfcast's: training wraps a model in scikit-learn's ``TransformedTargetRegressor`` (log/exp),
whose fitted state lives in private attributes; :meth:`LogTarget.of` takes the fitted wrapper's inner model, and
the saved model is this class, whose ``predict`` is the same ``exp`` of the same numbers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor

from perfcast.models.persistence.errors import ModelFormatError


class LogTarget:
    """``exp(regressor_.predict(X))``: a fitted log-target model (see the module docstring)."""

    state_children: ClassVar[dict[str, str]] = {"regressor_": ""}

    def __init__(self, regressor_: Any = None):
        self.regressor_ = regressor_

    @classmethod
    def of(cls, est: TransformedTargetRegressor) -> LogTarget:
        """The fitted log/exp ``est`` (any other transform is refused: it could not be saved as data)."""
        if est.func is not np.log or est.inverse_func is not np.exp:
            raise ModelFormatError(f"cannot save a TransformedTargetRegressor with func={est.func!r}: only "
                                   f"the log/exp target transform of perfcast's registry is supported")
        return cls(est.regressor_)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.exp(self.regressor_.predict(X))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> LogTarget:
        return cls()
