"""The log-target wrapper as perfcast saves and serves it: exp of a model fitted on log(y).

Why a class of perfcast's: training wraps a model in scikit-learn's ``TransformedTargetRegressor`` (log/exp),
whose fitted state lives in private attributes; :meth:`LogTarget.of` takes the fitted wrapper's inner model, and
the saved model is this class, whose ``predict`` is the same ``exp`` of the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.estimator_base import is_instance
from perfcast.models.persistence.errors import ModelFormatError

if TYPE_CHECKING:
    from sklearn.compose import TransformedTargetRegressor


def log_space(est: Any) -> TransformedTargetRegressor:
    """``est`` fitted on log(y) and predicting exp of its output (scikit-learn's wrapper, imported only when a
    model is built: serving reads the fitted wrapper back as :class:`LogTarget`)."""
    from sklearn.compose import TransformedTargetRegressor

    return TransformedTargetRegressor(regressor=est, func=np.log, inverse_func=np.exp, check_inverse=False)


def is_log_wrapper(est: Any) -> bool:
    """Whether ``est`` is scikit-learn's target wrapper (tested without importing scikit-learn)."""
    return is_instance(est, "sklearn.compose", "TransformedTargetRegressor")


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
