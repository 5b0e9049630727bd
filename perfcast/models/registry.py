"""Model registry: a name -> a scikit-learn Pipeline (task features + estimator) for some targets.

Why one wrapper for all targets: records measure runtime almost everywhere but power only sometimes, so
a row with NaN power must still train the runtime model. :class:`PerTargetRegressor` fits one estimator
per target on the rows where that target was measured, and learns targets that span decades (runtime,
energy) in log space, where the error that matters (relative) is what least squares minimises.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.impute import SimpleImputer
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from perfcast.records.schema import TARGETS, TASKS
from perfcast.features import feature_groups, feature_transformer
from perfcast.models.estimators.ensemble import GeometricEnsemble
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.estimators.knn import KNNRegressor, knn_estimator
from perfcast.models.estimators.normalize import normalized
from perfcast.models.estimators.per_target import PerTargetRegressor
from perfcast.models.estimators.power import power_estimator
from perfcast.models.estimators.roofline import NEEDS, RooflineRegressor
from perfcast.models.estimators.sibling import SiblingShrink
from perfcast.models.estimators.layout_split import LayoutSplit
from perfcast.models.estimators.phase_split import PhaseSplit
from perfcast.models.estimators.vendor import VendorSplit
from perfcast.models.estimators.transfer import SiblingTransfer
from perfcast.models.estimators.trees import CLASSES, tree_model
from perfcast.models.estimators.trees import DEFAULTS as TREE_DEFAULTS

# ------------------------------------------------------------------------------------------- factories
Factory = Callable[[str, list[str], dict[str, Any]], BaseEstimator]


def _split_log(params: dict[str, Any]) -> tuple[dict[str, Any], str | bool]:
    """``params`` without the reserved ``log_target`` key, and its value (default 'auto')."""
    rest = dict(params)
    return rest, rest.pop("log_target", "auto")


def _tree(kind: str) -> Factory:
    def factory(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
        rest, log = _split_log(params)
        return PerTargetRegressor(tree_model(kind, rest), targets, log_target=log)

    factory.__doc__ = f"{kind} ensemble per target."
    return factory


def _mlp(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
    """Median-imputed, standardised inputs into an early-stopped MLP, per target."""
    rest, log = _split_log(params)
    mlp_params = {"hidden_layer_sizes": (128, 64), "early_stopping": True, "max_iter": 500, "random_state": 0,
                  **rest}
    net = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                        MLPRegressor(**mlp_params))
    return PerTargetRegressor(net, targets, log_target=log)


def _analytic(task: str, targets: list[str]) -> None:
    if task not in ("gemm", "attention"):
        raise ValueError(f"the roofline and hybrid models need a roofline time: task {task!r} has none "
                         f"(they support gemm and attention; use a learned model such as 'lightgbm')")
    bad = [t for t in targets if t not in NEEDS]
    if bad:
        raise ValueError(f"the roofline and hybrid models have no analytical baseline for {bad}; "
                         f"they predict {', '.join(NEEDS)}")


def _roofline(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
    """The analytical model (accepts no parameters: nothing is learned)."""
    _analytic(task, targets)
    if params:
        raise ValueError(f"the roofline model learns nothing and takes no parameters; got {sorted(params)}")
    return PerTargetRegressor(RooflineRegressor(), targets, log_target=False)


def expand_columns(task: str, names: list[str]) -> list[str]:
    """Feature column names, where a name of one of the task's feature groups stands for all its columns."""
    groups = feature_groups(task)
    return list(dict.fromkeys(c for name in names for c in groups.get(name, [name])))


#: hybrid parameters that shape the hybrid itself; every other parameter goes to its LightGBM model
HYBRID_KEYS: tuple[str, ...] = ("columns", "latency_floor", "monotone", "relative", "power_limit", "wave_quantised",
                               "tiles", "size_trend", "balance_ops", "l2_resident", "l2_rows",
                               "softmax_exp", "l2_feature")
#: parameters that make the hybrid an ensemble: ``seeds`` (a seed bag) and ``variants`` (a list of parameter
#: overrides, one member each, e.g. one member that sees the hardware columns and one that does not);
#: ``by_vendor`` fits that model once per GPU vendor (:class:`VendorSplit`), ``by_layout`` once per GEMM operand
#: layout (:class:`LayoutSplit`: NeuSight's bmm and linear apart), ``by_phase`` once per attention phase
#: (:class:`PhaseSplit`: prefill and decode apart)
ENSEMBLE_KEYS: tuple[str, ...] = ("seeds", "variants", "by_vendor", "by_layout", "by_phase")


def _one_hybrid(task: str, params: dict[str, Any]) -> HybridRegressor:
    params = dict(params)
    own = {k: params.pop(k) for k in HYBRID_KEYS if k in params}
    if own.get("columns") is not None:
        own["columns"] = expand_columns(task, own["columns"])
    return HybridRegressor(estimator=tree_model("lightgbm", params), **own)


def hybrid_estimator(task: str, params: dict[str, Any]) -> RegressorMixin:
    """The hybrid regressor ``params`` describe: one :class:`HybridRegressor`, or a geometric ensemble of them."""
    params = dict(params)
    if params.pop("by_vendor", False):
        return VendorSplit(hybrid_estimator(task, params))
    if params.pop("by_layout", False):
        return LayoutSplit(hybrid_estimator(task, params))
    if params.pop("by_phase", False):
        return PhaseSplit(hybrid_estimator(task, params))
    seeds, variants = params.pop("seeds", None), params.pop("variants", None)
    if variants is not None and (not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants)):
        raise ValueError(f"hybrid: variants must be a list of parameter tables, got {variants!r}")
    members = [_one_hybrid(task, {**params, **v}) for v in (variants or [{}])]
    if seeds is None and len(members) == 1:
        return members[0]
    return GeometricEnsemble(members, seeds=seeds)


def _hybrid(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
    """Roofline (+ latency floor) x learned efficiency; ``columns``, ``latency_floor`` and ``monotone`` shape
    the hybrid (see :class:`HybridRegressor`), ``seeds``/``variants`` make it an ensemble
    (:class:`GeometricEnsemble`), the other ``params`` go to its LightGBM model."""
    _analytic(task, targets)
    return PerTargetRegressor(hybrid_estimator(task, params), targets, log_target=False)


#: transfer parameters that shape the sibling correction; the rest configure its hybrid base model
TRANSFER_KEYS: tuple[str, ...] = ("scale", "max_rows")


def _sibling_transfer(task: str, targets: list[str], params: dict[str, Any]) -> SiblingTransfer:
    """The :class:`SiblingTransfer` ``params`` describe (``scale``, ``max_rows``; the rest: its hybrid)."""
    _analytic(task, targets)
    params = dict(params)
    own = {k: params.pop(k) for k in TRANSFER_KEYS if k in params}
    groups = feature_groups(task)
    config = [*groups["shape"], *groups["dtype"]]
    device = [c for c in groups["hardware"] if c not in ("peak_tflops", "log10_watts_per_tflop")]  # per dtype
    return SiblingTransfer(hybrid_estimator(task, params), config, device, **own)


def _transfer(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
    """The hybrid corrected by sibling devices' residuals on the same configuration (:class:`SiblingTransfer`);
    ``scale`` and ``max_rows`` shape the correction, the other ``params`` describe the hybrid."""
    return PerTargetRegressor(_sibling_transfer(task, targets, params), targets, log_target=False)


#: sibling parameters that shape the shrunk copy; the rest configure its transfer
SIBLING_KEYS: tuple[str, ...] = ("nested_max_rows", "nested_share", "max_cc_gap")


def _sibling(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
    """A measured sibling GPU's latency times a ratio shrunk toward 1 by nested validation, the transfer where
    no sibling measured the configuration (:class:`SiblingShrink`)."""
    params = dict(params)
    own = {k: params.pop(k) for k in SIBLING_KEYS if k in params}
    return PerTargetRegressor(SiblingShrink(_sibling_transfer(task, targets, params), **own), targets,
                              log_target=False)


def _group_attention(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
    """The NCPP-style group-attention network over the task's feature groups (all targets jointly)."""
    # imported on use: torch is heavy, and the module need not exist for the other models to work
    from perfcast.models.estimators.group_attention import GroupAttentionRegressor

    return PerTargetRegressor(GroupAttentionRegressor(groups=feature_groups(task), **params), targets,
                              log_target=False, joint=True)


def _power(task: str, targets: list[str], params: dict[str, Any]) -> BaseEstimator:
    """Board power from the spec sheet's limit and the kernel's utilisation, with a learned correction, fitted
    jointly with runtime and energy when they are targets (:class:`~perfcast.models.estimators.power.PowerRegressor`)."""
    return PerTargetRegressor(power_estimator(task, targets, params), targets, log_target=False, joint=True)


MODELS: dict[str, Factory] = {
    "rf": _tree("rf"),
    "extra_trees": _tree("extra_trees"),
    "xgboost": _tree("xgboost"),
    "lightgbm": _tree("lightgbm"),
    "mlp": _mlp,
    "roofline": _roofline,
    "hybrid": _hybrid,
    "transfer": _transfer,
    "sibling": _sibling,
    "group_attention": _group_attention,
    # another model on targets divided by a per-(workload) baseline (see perfcast.models.estimators.normalize)
    "normalized": normalized,
    "power": _power,
    "knn": lambda task, targets, params: PerTargetRegressor(knn_estimator(task, params), targets, log_target=False),
}


def model_names() -> list[str]:
    """Every registered model name."""
    return list(MODELS)


# ------------------------------------------------------------------------------------- parameter checks
#: parameters a registry factory reads itself (not its estimator's), with the default that types them (None:
#: checked by the factory or the class that takes it)
LOG_KEY = {"log_target": None}
OWN_KEYS: dict[str, dict[str, Any]] = {
    "hybrid": {"columns": None, "latency_floor": True, "monotone": None, "relative": False, "seeds": None,
               "variants": None, "by_vendor": False, "power_limit": None, "wave_quantised": False,
               "tiles": False, "by_layout": False, "by_phase": False, "size_trend": None,
               "balance_ops": False, "l2_resident": False, "l2_rows": "all",
               "softmax_exp": False, "l2_feature": False},
    "transfer": {"scale": 0.8, "max_rows": None},
    "sibling": {"nested_max_rows": None, "nested_share": 1.0, "max_cc_gap": 0.5},
    "normalized": {"base": "lightgbm", "group_by": None, "scale_by": None, "monotone": None},
    # tables of LightGBM parameters for the power model's runtime head and its power correction
    "power": {"runtime": None, "correction": None},
}


#: the "default" of LightGBM's own parameter names: untyped here (LightGBM checks them), and left out of the
#: list of parameters an error message prints
NATIVE = object()


def _lightgbm_native() -> dict[str, Any]:
    """LightGBM's own parameter names and aliases (``alpha``, ``min_data_in_leaf``...), which LGBMRegressor
    passes through."""
    from lightgbm.basic import _ConfigAliases

    return {k: NATIVE for name, aliases in _ConfigAliases._get_all_param_aliases().items() for k in (name, *aliases)}


def _estimator_params(kind: str) -> dict[str, Any]:
    """The parameters the estimator class behind ``kind`` takes, with defaults (``get_params()`` of one)."""
    if kind == "mlp":
        return MLPRegressor().get_params(deep=False)
    if kind == "group_attention":
        from perfcast.models.estimators.group_attention import GroupAttentionRegressor

        return {k: v for k, v in GroupAttentionRegressor().get_params(deep=False).items() if k != "groups"}
    own = CLASSES[kind]().get_params(deep=False)
    return {**_lightgbm_native(), **own, **TREE_DEFAULTS[kind]} if kind == "lightgbm" else {**own, **TREE_DEFAULTS[kind]}


def accepted_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter model ``name`` accepts, with the default that types it (None: untyped). ``params`` matter
    only for ``normalized``, whose ``base`` decides the inner model's parameters."""
    if name in CLASSES:
        return {**LOG_KEY, **_estimator_params(name)}
    if name == "mlp":
        return {**LOG_KEY, **_estimator_params("mlp")}
    if name == "roofline":
        return {}
    if name == "knn":
        return KNNRegressor().get_params(deep=False)
    if name in ("hybrid", "transfer", "sibling"):
        return {**OWN_KEYS["hybrid"], **(OWN_KEYS["transfer"] if name != "hybrid" else {}),
                **(OWN_KEYS["sibling"] if name == "sibling" else {}), **_estimator_params("lightgbm")}
    if name == "group_attention":
        return _estimator_params("group_attention")
    if name == "normalized":
        base = (params or {}).get("base", "lightgbm")
        inner = _estimator_params(base) if base in (*CLASSES, "group_attention") else {}
        # seeds is accepted here for every base so that normalized itself says which bases take it
        return {**OWN_KEYS["normalized"], "seeds": None, **({} if base == "group_attention" else LOG_KEY), **inner}
    if name == "power":
        return {**OWN_KEYS["power"], **_estimator_params("lightgbm")}
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def _type_error(name: str, key: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot be parameter ``key`` whose default is ``default`` (None when it can, or when the
    default says nothing: None)."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "an integer" if isinstance(default, int) else "a number"
        ok = ok and (not isinstance(default, int) or float(value).is_integer())
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "text"
    else:
        return None
    return None if ok else f"{name}: parameter {key!r} must be {want} (default {default!r}), got {value!r}"


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming any parameter model ``name`` does not take (with the ones it does) or whose
    value has the wrong type: LightGBM and XGBoost take unknown keywords silently, so a typo would train the
    defaults and be logged as if used. scikit-learn estimators' values are checked by scikit-learn's own rules."""
    allowed = accepted_params(name, params)
    sklearn_cls = {**CLASSES, "mlp": MLPRegressor}.get(params.get("base", "lightgbm") if name == "normalized" else name)
    by_sklearn = set(sklearn_cls().get_params(deep=False)) if hasattr(sklearn_cls, "_parameter_constraints") else set()
    tables = [("", params)] + [(f"variants[{i}].", v) for i, v in enumerate(params.get("variants") or [])
                               if name in ("hybrid", "transfer", "sibling") and isinstance(v, dict)]
    tables += [(f"{k}.", params[k]) for k in OWN_KEYS["power"] if name == "power" and isinstance(params.get(k), dict)]
    for where, table in tables:
        nested = ("seeds", "variants", "by_vendor", "by_layout", "by_phase", *OWN_KEYS["transfer"], *OWN_KEYS["sibling"],
                  *OWN_KEYS["power"])
        keys = {k: d for k, d in allowed.items() if not where or k not in nested}
        unknown = sorted(set(table) - set(keys))
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(keys), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            readable = sorted(k for k, d in keys.items() if d is not NATIVE)
            raise ValueError(f"{name}: unknown parameter '{where}{unknown[0]}'{hint}; it takes: "
                             f"{', '.join(readable) or 'no parameters'}"
                             + (" and LightGBM's own parameter names" if len(readable) < len(keys) else ""))
        for key, value in table.items():
            problem = None if key in by_sklearn else _type_error(name, where + key, value, keys[key])
            if problem:
                raise ValueError(problem)
    if by_sklearn:
        try:
            sklearn_cls(**{k: v for k, v in params.items() if k in by_sklearn})._validate_params()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: {err}") from None


def make_model(name: str, task: str, targets: list[str], params: dict[str, Any] | None = None) -> Pipeline:
    """A new Pipeline ``features`` (the task's transformer) -> ``model`` (``name`` fitted per target).

    ``params`` go to the estimator (e.g. ``{"n_estimators": 500}``); the reserved key ``log_target``
    ('auto', True, False) sets the target scale of the learned per-target models. Unknown or mistyped
    parameters are refused by name (:func:`check_params`).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if isinstance(targets, str) or not targets:
        raise ValueError(f"targets must be a non-empty list of target names, got {targets!r}")
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"unknown target(s) {bad}; known: {', '.join(TARGETS)}")
    check_params(name, dict(params or {}))
    model = MODELS[name](task, list(targets), dict(params or {}))
    return Pipeline([("features", feature_transformer(task)), ("model", model)])
