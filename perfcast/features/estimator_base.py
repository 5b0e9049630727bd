"""A scikit-learn-compatible estimator base that does not import scikit-learn.

Why: loading a bundle constructs perfcast's own estimator and transformer classes, so their base class decides
what a fresh process imports, and ``sklearn.base`` pulls in most of SciPy (half of a fresh ``perfcast predict``).
These bases give what perfcast and scikit-learn's tools use: ``get_params`` / ``set_params`` as scikit-learn
defines them (so ``sklearn.base.clone``, ``Pipeline`` and parameter grids work), ``__sklearn_tags__`` (built by
scikit-learn's own classes when scikit-learn asks for them, i.e. once it is imported anyway), a parameter
``repr``, ``score`` for regressors and ``fit_transform`` / ``set_output`` for transformers. Fitting code imports
``clone`` from scikit-learn inside ``fit``; serving code checks fittedness with :func:`check_fitted`.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any

from perfcast.lazy import is_instance


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (the same bases as scikit-learn's error of that name)."""


class Estimator:
    """Parameters are the ``__init__`` arguments, stored under their own names (scikit-learn's convention)."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        if cls.__init__ is object.__init__:
            return []
        params = [p for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name != "self" and p.kind != p.VAR_KEYWORD]
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            raise RuntimeError(f"{cls.__name__}.__init__ takes *args: estimators name every parameter")
        return sorted(p.name for p in params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameter name -> value; with ``deep``, also ``<param>__<name>`` of every sub-estimator."""
        out: dict[str, Any] = {}
        for key in self._get_param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    def set_params(self, **params: Any) -> Estimator:
        """Set parameters (``<param>__<name>`` reaches into a sub-estimator); an unknown name is refused."""
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = defaultdict(dict)
        for key, value in params.items():
            name, delim, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for estimator {type(self).__name__}; valid "
                                 f"parameters are {self._get_param_names()}")
            if delim:
                nested[name][sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            valid[name].set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items()
                   if k not in defaults or repr(v) != repr(defaults[k])]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        from sklearn.base import BaseEstimator

        return BaseEstimator.__sklearn_tags__(self)


class Regressor(Estimator):
    """A regressor as scikit-learn's ``RegressorMixin`` describes one (tags, R² ``score``)."""

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        from sklearn.metrics import r2_score

        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))  # type: ignore[attr-defined]

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import RegressorTags

        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
        tags.target_tags.required = True
        return tags


class Transformer(Estimator):
    """A transformer as scikit-learn's ``TransformerMixin`` describes one; its output is always a DataFrame."""

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        return self.fit(X, y, **fit_params).transform(X)  # type: ignore[attr-defined]

    def set_output(self, *, transform: str | None = None) -> Transformer:
        """Accepts ``"pandas"`` (what :meth:`transform` returns anyway) or None; other containers are refused."""
        if transform not in (None, "pandas"):
            raise ValueError(f"{type(self).__name__} returns a pandas DataFrame; set_output(transform={transform!r}) "
                             f"is not supported")
        return self

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags()
        return tags


def check_fitted(est: Any, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``est`` has ``attribute`` (set by its ``fit`` or ``from_state``)."""
    if not hasattr(est, attribute):
        raise NotFittedError(f"this {type(est).__name__} is not fitted yet: call fit first")


def is_estimator(obj: Any) -> bool:
    """Whether ``obj`` is an estimator of perfcast's (these bases) or of scikit-learn's."""
    return isinstance(obj, Estimator) or is_instance(obj, "sklearn.base", "BaseEstimator")


def clone(est: Any) -> Any:
    """``sklearn.base.clone(est)``, importing scikit-learn only when a model is fitted (never to serve one)."""
    from sklearn.base import clone as sklearn_clone

    return sklearn_clone(est)
