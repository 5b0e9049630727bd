"""The training configuration: one TOML file says what to fit on which data, how to judge it, where to log it.

Validation is strict (``extra="forbid"``) so a misspelt key fails loudly instead of silently using a default,
and every error names the file, the field path (``tune.space.max_depth.low``) and what was wrong. Paths are
relative to the config file, and ``${VAR}`` / ``${VAR:-default}`` expand from the environment, so one config
works on every machine that sets ``PERFCAST_DATA_ROOT`` (or keeps the shared datasets beside the checkout).
"""

from __future__ import annotations

import inspect
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from perfcast.records.schema import TARGETS, TASKS

DEFAULT_EXPERIMENT = "perfcast"
#: the repository's configs: each file with a ``[benchmark]`` table is a benchmark preset
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_STUDY_STORAGE = "sqlite:///optuna.db"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config file could not be read or failed validation; the message lists every problem."""


def expand_env(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (shell style); an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name) or default
        if value is None:
            raise ValueError(f"environment variable {name} is not set and {m.group(0)} gives no default")
        return value

    return _ENV_REF.sub(sub, text)


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    """Expand env references and make a relative path relative to the config file's directory."""
    if value is None:
        return None
    path = Path(expand_env(str(value))).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path.resolve() if path.is_absolute() else path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


FilterValue = str | int | float | bool


class ImportSpec(_Strict):
    """A public dataset to import into the store before training (idempotent: records dedupe)."""

    dataset: str = Field(description="importer name, as in `perfcast data import NAME`")
    path: Path = Field(description="directory holding the dataset copy")

    _path = field_validator("path", mode="before")(_resolve_path)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from perfcast.datasets.importers import REGISTRY

        if v not in REGISTRY:
            raise ValueError(f"unknown dataset {v!r}; known: {', '.join(sorted(REGISTRY))}")
        return v


class DataConfig(_Strict):
    """Where the records come from: a store directory, datasets to import first, and row filters.

    Without ``store``, imports go to a fresh temporary store for the run (no hidden state between runs);
    with neither, the user's default store (``$PERFCAST_STORE`` or ``~/.perfcast/store``) is read.
    """

    store: Path | None = None
    imports: list[ImportSpec] = Field(default_factory=list)
    filters: dict[str, FilterValue | list[FilterValue]] = Field(
        default_factory=dict, description="column -> value or list of values to keep"
    )

    _store = field_validator("store", mode="before")(_resolve_path)

    @field_validator("filters")
    @classmethod
    def _non_empty_lists(cls, v: dict[str, Any]) -> dict[str, Any]:
        empty = [k for k, val in v.items() if isinstance(val, list) and not val]
        if empty:
            raise ValueError(f"filter(s) {empty} have an empty list of values and would keep no rows")
        return v


class ModelConfig(_Strict):
    """The estimator: a name from ``perfcast.models.registry`` and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from perfcast.models.registry import model_names

        known = model_names()
        if v not in known:
            raise ValueError(f"unknown model {v!r}; known: {', '.join(sorted(known))}")
        return v

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Parameter names and value types are the model's (LightGBM would ignore a misspelt one silently)."""
        from perfcast.models.registry import check_params

        if "name" in info.data:
            check_params(info.data["name"], v)
        return v


class EvalConfig(_Strict):
    """A named, seeded evaluation protocol and its options (passed to the split function)."""

    protocol: str = "random"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        from perfcast.eval.protocols import PROTOCOLS

        if v not in PROTOCOLS:
            raise ValueError(f"unknown protocol {v!r}; known: {', '.join(sorted(PROTOCOLS))}")
        return v

    @model_validator(mode="after")
    def _known_options(self) -> EvalConfig:
        """Option names must be the split function's keyword parameters (a typo would be ignored otherwise)."""
        from perfcast.eval.protocols import PROTOCOLS

        params = inspect.signature(PROTOCOLS[self.protocol]).parameters
        allowed = [n for n, p in list(params.items())[1:] if n != "seed" and p.kind is p.POSITIONAL_OR_KEYWORD]
        bad = sorted(set(self.options) - set(allowed))
        if bad:
            raise ValueError(f"options {bad} are not options of protocol {self.protocol!r}; "
                             f"it takes: {', '.join(allowed) or 'none'}")
        return self


class ZeroShotConfig(_Strict):
    """A K = 0 interval rule for hardware with no training rows (:mod:`perfcast.models.uncertainty.zero_shot`):
    the width as a function of spec-sheet distance, Mondrian groups ("phase", "kind", with " own" each fitting its
    own width function), a scale of the half-width, and calibration matched by vendor. Saved in the bundle."""

    width: Literal["pooled", "isotonic", "linear", "device"]
    groups: Literal["phase", "kind", "phase own", "kind own"] | None = None
    scale: float = Field(default=1.0, gt=0.0)
    vendor_matched: bool = False


class IntervalsConfig(_Strict):
    """How the calibrated intervals are fitted (see :class:`perfcast.models.uncertainty.intervals.ConformalRegressor`):
    the level, the number of cross-conformal folds (each one more fit of the model: fewer for slow models),
    whether widths scale with how far a row's hardware is from the trained hardware (``scale``), and
    ``forward_years``: calibrate by predicting each of the latest N training years from the earlier ones (for
    future-hardware protocols) instead of holding out devices; ``zero_shot``: the K = 0 rule for unseen hardware."""

    level: float = Field(default=0.9, gt=0.0, lt=1.0)
    n_splits: int = Field(default=5, ge=2)
    scale: bool = False
    forward_years: int | None = Field(default=None, ge=1)
    zero_shot: ZeroShotConfig | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ConformalRegressor."""
        from perfcast.models.uncertainty.intervals import ForwardFolds

        cv = ForwardFolds(n_folds=self.forward_years) if self.forward_years else None
        return {"level": self.level, "n_splits": self.n_splits, "scale": self.scale, "cv": cv}


class TrackingConfig(_Strict):
    """MLflow destination. ``$MLFLOW_TRACKING_URI`` (and ``--tracking-uri``) override ``uri``; without any,
    runs go to ``sqlite:///mlflow.db`` in the working directory."""

    uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    registered_model_name: str | None = Field(
        default=None, description="registry name; defaults to the config's name"
    )


class FloatSpace(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatSpace:
        _check_range(self.low, self.high, self.log)
        return self


class IntSpace(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _range(self) -> IntSpace:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step must be 1 when log = true (Optuna cannot combine them)")
        return self


class CategoricalSpace(_Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1)


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"low ({low}) must be positive when log = true")


ParamSpace = Annotated[FloatSpace | IntSpace | CategoricalSpace, Field(discriminator="type")]


class TuneConfig(_Strict):
    """An Optuna study over ``space``; trials are scored on ``validation`` (an inner split of the training rows)."""

    n_trials: PositiveInt = 20
    storage: str | None = Field(default=None, description=f"database URL; default {DEFAULT_STUDY_STORAGE}")
    study_name: str | None = Field(default=None, description="defaults to the config's name")
    space: dict[str, ParamSpace] = Field(default_factory=dict)
    validation: EvalConfig = Field(
        default_factory=lambda: EvalConfig(protocol="random", options={"test_size": 0.2}),
        description="how the training rows are split to score a trial (the test split is never used)",
    )
    prune_at: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=list,
        description="fractions of the trial's training rows to fit on first; a trial whose validation MAPE "
        "at a fraction is worse than the median of earlier trials there is pruned (worth it for networks)",
    )

    @field_validator("prune_at")
    @classmethod
    def _ascending(cls, v: list[float]) -> list[float]:
        if v != sorted(set(v)):
            raise ValueError(f"prune_at {v} must be strictly increasing fractions")
        return v


class BenchmarkConfig(_Strict):
    """What makes a training config a benchmark preset: the accuracy benchmark's protocols that run this
    config's model, data and intervals (``benchmarks/accuracy.py --protocol NAME``), how many training rows a
    fit draws, protocol options, and what the settings were chosen on (reported beside every score, so a
    number tuned on its own test devices reads as such)."""

    protocols: list[str] = Field(min_length=1, description="benchmark protocol names this preset is the default of")
    selected_on: str = Field(min_length=1, description="the rows the model and its settings were chosen on")
    train_rows: PositiveInt | None = Field(default=None, description="training rows drawn (seeded) per fit; "
                                           "unset: every row")
    options: dict[str, Any] = Field(default_factory=dict, description="the protocol's own settings")


class TrainConfig(_Strict):
    """Everything one ``perfcast train`` run needs (and, with ``benchmark``, a benchmark preset)."""

    name: str = Field(description="run name; default registry and study name")
    task: str
    targets: list[str] = Field(min_length=1, description="first one is primary (tuning objective)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    intervals: IntervalsConfig = Field(default_factory=IntervalsConfig)
    seed: NonNegativeInt = 0
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    benchmark: BenchmarkConfig | None = None

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; expected one of {', '.join(TASKS)}")
        return v

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in TARGETS]
        if bad:
            raise ValueError(f"unknown target(s) {bad}; expected some of {', '.join(TARGETS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"targets {v} repeat a name")
        return v

    @model_validator(mode="after")
    def _tuned_params_exist(self) -> TrainConfig:
        """A tuning space names parameters of the model (a misspelt one would be tuned and silently ignored)."""
        from perfcast.models.registry import accepted_params

        unknown = sorted(set(self.tune.space) - set(accepted_params(self.model.name, self.model.params)))
        if unknown:
            raise ValueError(f"tune.space: {unknown} are not parameters of model {self.model.name!r} (see the "
                             f"error for a misspelt model.params key for the ones it takes)")
        return self

    @property
    def registered_model_name(self) -> str:
        return self.tracking.registered_model_name or self.name

    @property
    def study_name(self) -> str:
        return self.tune.study_name or self.name


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through list/dict/union/Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys valid at the table holding ``loc[-1]``, so an unknown-key error can say what was meant."""
    models: list[type[BaseModel]] = [TrainConfig]
    for part in loc[:-1]:
        tagged = [m for m in models if m.model_fields.get("type") and part in get_args(m.model_fields["type"].annotation)]
        if tagged:  # a discriminated-union tag (``float`` in ``space.x.float.low``)
            models = tagged
        elif len(models) == 1 and part in models[0].model_fields:
            models = _models_in(models[0].model_fields[part].annotation)
        # other parts are list indices or dict keys: the model stays the same
    return sorted(models[0].model_fields) if len(models) == 1 else []


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(tuple(e["loc"]))
            msg = "unknown key" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None, source: str = "<config>") -> TrainConfig:
    """Validate a config mapping; relative paths resolve against ``base_dir``. Raises :class:`ConfigError`."""
    try:
        return TrainConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read and validate a TOML config; ``name`` defaults to the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    data.setdefault("name", path.stem)
    return parse_config(data, base_dir=path.resolve().parent, source=str(path))


def preset_files(configs_dir: Path = CONFIGS_DIR) -> dict[str, Path]:
    """Benchmark protocol -> the one config file under ``configs_dir`` whose ``[benchmark]`` names it.

    Read as plain TOML (no validation), so listing presets costs no model import; a protocol named by two
    files is an error (one home per setting)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(configs_dir).glob("*.toml")):
        try:
            bench = tomllib.loads(path.read_text(encoding="utf-8")).get("benchmark") or {}
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        for protocol in bench.get("protocols", []):
            if protocol in found:
                raise ConfigError(f"benchmark protocol {protocol!r} is claimed by both {found[protocol].name} and "
                                  f"{path.name}; keep it in one preset")
            found[protocol] = path
    return found


def load_preset(protocol: str, configs_dir: Path = CONFIGS_DIR) -> TrainConfig:
    """The validated preset of a benchmark ``protocol`` (a :class:`ConfigError` naming the known ones if none)."""
    files = preset_files(configs_dir)
    if protocol not in files:
        raise ConfigError(f"no preset in {configs_dir} names benchmark protocol {protocol!r} under "
                          f"[benchmark] protocols; presets exist for: {', '.join(sorted(files))}")
    return load_config(files[protocol])
