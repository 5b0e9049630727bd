"""NCPP-style group-attention regressor, as a scikit-learn estimator.

Why this model: hardware performance depends on *interactions* between groups of features (processor,
memory, workload, ...). The network (:mod:`perfcast.models.estimators.group_attention_net`) turns every
feature into a token and attends within and then across feature groups; this module is what makes it a
regressor: scaling, the train/validation split, early stopping, prediction and saving.

Everything fitted from data (input scaling, target scaling) sees the training part only, never the
validation rows used for early stopping. A fit is reproducible for a given ``random_state`` and leaves the
caller's global torch RNG state, determinism flag and thread count as they were.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.utils import Tags, check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from perfcast.models.estimators.group_attention_net import GroupAttentionNet, masked_sse, reproducible, torch_threads

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "model.json"
_PREDICT_CHUNK = 8192


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write then rename, so a crashed save never leaves a half-written model that loads."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class GroupAttentionRegressor(RegressorMixin, BaseEstimator):
    """Group-attention network regressor (NCPP-style) on a numeric DataFrame.

    Parameters
    ----------
    groups : feature-group name → column names of X. Every column of X must be in exactly one group.
        None makes every column its own group (the cross-group attention then attends over all features).
    d_model, n_heads, n_layers, dropout : token width, attention heads (must divide d_model), encoder
        layers in each of the within- and cross-group encoders, dropout.
    lr, weight_decay, batch_size, max_epochs, patience : AdamW optimisation and early stopping.
    validation_fraction : share of the training rows held out (seeded) for early stopping; 0 trains for
        max_epochs and keeps the last weights.
    log_target : model log(y) (targets must then be > 0); sensible when targets span decades.
    random_state : int seed (or None for a fresh one); equal seeds give identical fits.
    device : torch device string.
    n_threads : torch intra-op threads while fitting/predicting (restored afterwards); None keeps torch's
        setting. 1 is usually fastest for these small networks, and much faster on a busy machine.

    Attributes
    ----------
    feature_names_in_, n_features_in_ : X's columns at fit. groups_ : the groups used (resolved from groups).
    x_mean_, x_scale_, y_mean_, y_scale_ : input and (log-)target standardisation, from the training rows.
    validation_indices_ : positions of the rows of X held out for early stopping.
    best_epoch_ : 1-based epoch whose weights were kept. history_ : per-epoch "train_loss" and "val_loss"
        (mean squared error on the standardised target scale).
    net_ : the torch module.
    """

    def __init__(
        self,
        groups: dict[str, list[str]] | None = None,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 1,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 300,
        patience: int = 20,
        validation_fraction: float = 0.15,
        log_target: bool = True,
        random_state: int | None = 0,
        device: str = "cpu",
        n_threads: int | None = None,
    ) -> None:
        self.groups = groups
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.log_target = log_target
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------------ fit

    def fit(self, X: pd.DataFrame, y: Any, *, val_groups: Any = None) -> GroupAttentionRegressor:
        """Fit on a numeric DataFrame X and target y (1-D, or 2-D for several outputs; NaN = not measured).

        val_groups: optional row labels (e.g. processor names); when given, the early-stopping validation
        split holds out whole labels, so it measures the same kind of generalisation as a grouped test split.
        """
        self._check_params()
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"GroupAttentionRegressor.fit: X must be a pandas DataFrame (groups refer to its column names), "
                f"got {type(X).__name__}"
            )
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.groups_ = self._resolve_groups(list(self.feature_names_in_))
        values = self._numeric_matrix(X, "fit")
        targets = self._target_matrix(y, len(X))
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        train_idx, val_idx = self._split(len(X), val_groups, seed)
        if len(val_idx) and not np.isfinite(targets[val_idx]).any():
            raise ValueError("the validation split has no measured target; early stopping cannot judge epochs")
        self.validation_indices_ = val_idx
        self._fit_scalers(values[train_idx], targets[train_idx])

        device = torch.device(self.device)
        train = self._tensors(values[train_idx], targets[train_idx], device)
        val = self._tensors(values[val_idx], targets[val_idx], device) if len(val_idx) else None
        with reproducible(seed, device), torch_threads(self.n_threads):
            self.net_ = self._build_net().to(device)
            self._train(train, val, torch.Generator().manual_seed(seed))
        return self

    def _check_params(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise TypeError(
                f"random_state must be an int or None (so fits are reproducible and saveable), "
                f"got {type(self.random_state).__name__}"
            )
        if self.n_threads is not None and int(self.n_threads) < 1:
            raise ValueError(f"n_threads must be >= 1 or None, got {self.n_threads}")
        for name in ("d_model", "n_layers", "batch_size", "max_epochs", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _resolve_groups(self, columns: list[str]) -> dict[str, list[str]]:
        """Check the groups against X's columns: every column in exactly one group, no name missing."""
        if self.groups is None:
            return {c: [c] for c in columns}
        if not isinstance(self.groups, Mapping) or not self.groups:
            raise TypeError(f"groups must be a non-empty dict of group name -> column names, got {self.groups!r}")
        present = set(columns)
        owner: dict[str, str] = {}
        problems: list[str] = []
        for name, cols in self.groups.items():
            if isinstance(cols, str) or not len(cols):
                problems.append(f"group {name!r} must be a non-empty list of column names, got {cols!r}")
                continue
            absent = [c for c in cols if c not in present]
            if absent:
                problems.append(f"group {name!r} names columns not in X: {absent}")
            for c in cols:
                if c in owner:
                    problems.append(f"column {c!r} is in both group {owner[c]!r} and group {name!r}")
                owner[c] = name
        unassigned = [c for c in columns if c not in owner]
        if unassigned:
            problems.append(f"columns of X in no group: {unassigned} (add them to a group or drop them from X)")
        if problems:
            raise ValueError("GroupAttentionRegressor: groups do not match X:\n  " + "\n  ".join(problems))
        return {str(name): [str(c) for c in cols] for name, cols in self.groups.items()}

    def _numeric_matrix(self, X: pd.DataFrame, where: str) -> np.ndarray:
        """X's columns (in feature_names_in_ order) as float64; NaN marks a missing value."""
        names = [str(c) for c in X.columns]
        present = set(names)
        missing = [c for c in self.feature_names_in_ if c not in present]
        if missing:
            raise ValueError(f"GroupAttentionRegressor.{where}: X lacks columns seen in fit: {missing}")
        frame = X.set_axis(names, axis=1)[list(self.feature_names_in_)]
        bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            kinds = {c: str(frame[c].dtype) for c in bad}
            raise TypeError(
                f"GroupAttentionRegressor.{where}: non-numeric columns {kinds}; encode them as numbers first "
                f"(e.g. with the perfcast.features transformers)"
            )
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(values).any(axis=0)
        if infinite.any():
            raise ValueError(
                f"GroupAttentionRegressor.{where}: infinite values in columns "
                f"{list(frame.columns[infinite])}; use NaN for unknown values"
            )
        return values

    def _target_matrix(self, y: Any, n_rows: int) -> np.ndarray:
        """y as a (rows, outputs) float array, remembering whether predictions should come back 1-D."""
        target = np.asarray(y, dtype=np.float64)
        if target.ndim not in (1, 2) or target.shape[0] != n_rows:
            raise ValueError(f"y must be 1-D or 2-D with {n_rows} rows (one per row of X), got shape {target.shape}")
        self.target_ndim_ = target.ndim
        target = target.reshape(n_rows, -1)
        self.n_outputs_ = target.shape[1]
        if np.isinf(target).any():
            raise ValueError("y contains infinite values; use NaN for targets that were not measured")
        if self.log_target and (target <= 0).any():
            bad = np.flatnonzero((target <= 0).any(axis=0)).tolist()
            raise ValueError(
                f"log_target=True needs y > 0, but outputs {bad} have {int((target <= 0).sum())} values <= 0; "
                f"mark unmeasured targets NaN or set log_target=False"
            )
        return target

    def _split(self, n_rows: int, val_groups: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded train/validation row split for early stopping (whole val_groups labels when given)."""
        everything = np.arange(n_rows)
        if self.validation_fraction == 0:
            return everything, everything[:0]
        if val_groups is None:
            splitter = ShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=seed)
        else:
            val_groups = np.asarray(val_groups)
            if val_groups.shape != (n_rows,):
                raise ValueError(f"val_groups must have one label per row ({n_rows}), got shape {val_groups.shape}")
            splitter = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=seed)
        try:
            train_idx, val_idx = next(splitter.split(everything, groups=val_groups))
        except ValueError as err:
            raise ValueError(
                f"cannot carve a validation split of {self.validation_fraction} from {n_rows} rows: {err}; "
                f"lower validation_fraction or set it to 0"
            ) from err
        return np.sort(train_idx), np.sort(val_idx)

    def _fit_scalers(self, train_x: np.ndarray, train_y: np.ndarray) -> None:
        """Standardise inputs (NaN ignored) and (log-)targets from the training rows only."""
        with _warnings_silenced():
            self.x_mean_ = np.nan_to_num(np.nanmean(train_x, axis=0), nan=0.0)
            std = np.nanstd(train_x, axis=0)
        self.x_scale_ = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        z = np.log(train_y) if self.log_target else train_y
        observed = np.isfinite(z).sum(axis=0)
        if (observed == 0).any():
            raise ValueError(
                f"outputs {np.flatnonzero(observed == 0).tolist()} have no measured (non-NaN) target in the "
                f"training split"
            )
        with _warnings_silenced():
            self.y_mean_ = np.nanmean(z, axis=0)
            std = np.nanstd(z, axis=0)
        self.y_scale_ = np.where(std > 0, std, 1.0)

    def _scale_x(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        missing = np.isnan(values)
        return np.where(missing, 0.0, (values - self.x_mean_) / self.x_scale_), missing

    def _tensors(self, values: np.ndarray, targets: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        scaled, missing = self._scale_x(values)
        z = ((np.log(targets) if self.log_target else targets) - self.y_mean_) / self.y_scale_
        observed = np.isfinite(z)
        return tuple(
            torch.as_tensor(a, device=device)
            for a in (scaled.astype(np.float32), missing, np.where(observed, z, 0.0).astype(np.float32), observed)
        )

    def _token_index(self) -> torch.Tensor:
        position = {name: i for i, name in enumerate(self.feature_names_in_)}
        longest = max(len(cols) for cols in self.groups_.values())
        index = np.full((len(self.groups_), longest), -1, dtype=np.int64)
        for g, cols in enumerate(self.groups_.values()):
            index[g, : len(cols)] = [position[c] for c in cols]
        return torch.as_tensor(index)

    def _build_net(self) -> GroupAttentionNet:
        return GroupAttentionNet(
            self._token_index(), self.n_features_in_, self.n_outputs_, int(self.d_model), int(self.n_heads), int(self.n_layers),
            float(self.dropout),
        )

    def _train(self, train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...] | None,
               generator: torch.Generator) -> None:
        """AdamW on masked MSE; keep the weights of the best validation epoch (early stopping)."""
        net = self.net_
        optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay, foreach=True)
        x, missing, z, observed = train
        self.history_: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        best_loss, best_state, since_best = math.inf, None, 0
        self.best_epoch_ = 0
        for epoch in range(1, int(self.max_epochs) + 1):
            net.train()
            total, count = 0.0, 0
            for batch in torch.randperm(len(x), generator=generator).split(int(self.batch_size)):
                batch = batch.to(x.device)
                sse, n_obs = masked_sse(net(x[batch], missing[batch]), z[batch], observed[batch])
                if n_obs == 0:
                    continue
                optimizer.zero_grad(set_to_none=True)
                (sse / n_obs).backward()
                nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)
                optimizer.step()
                total, count = total + sse.item(), count + n_obs
            self.history_["train_loss"].append(total / max(count, 1))
            if val is None:
                self.best_epoch_ = epoch
                continue
            val_loss = self._loss(val)
            self.history_["val_loss"].append(val_loss)
            if val_loss < best_loss:
                best_loss, since_best, self.best_epoch_ = val_loss, 0, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()

    def _loss(self, data: tuple[torch.Tensor, ...]) -> float:
        x, missing, z, observed = data
        sse, n_obs = masked_sse(self._forward(x, missing), z, observed)
        return float(sse) / max(n_obs, 1)

    def _forward(self, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """Inference in chunks (bounded memory), dropout off."""
        self.net_.eval()
        with torch.inference_mode():
            return torch.cat([self.net_(xc, mc) for xc, mc in zip(x.split(_PREDICT_CHUNK),
                                                                  missing.split(_PREDICT_CHUNK))])

    # -------------------------------------------------------------- predict

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predictions in the units of y: shape (rows,) for a 1-D y, else (rows, outputs)."""
        check_is_fitted(self, "net_")
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"GroupAttentionRegressor.predict: X must be a pandas DataFrame, got {type(X).__name__}")
        scaled, missing = self._scale_x(self._numeric_matrix(X, "predict"))
        device = next(self.net_.parameters()).device
        with torch_threads(self.n_threads):
            z = self._forward(
                torch.as_tensor(scaled.astype(np.float32), device=device), torch.as_tensor(missing, device=device)
            ).cpu().numpy().astype(np.float64)
        out = z * self.y_scale_ + self.y_mean_
        if self.log_target:
            out = np.exp(out)
        return out[:, 0] if self.target_ndim_ == 1 else out

    # ---------------------------------------------------------- save / load

    def _config(self) -> dict[str, Any]:
        """Everything fitted but the network's tensors, as JSON-able values."""
        check_is_fitted(self, "net_")
        if self.random_state is not None and not isinstance(self.random_state, int):
            raise TypeError("random_state must be an int or None to save the model")
        return {
            "format_version": FORMAT_VERSION,
            "class": type(self).__name__,
            "params": self.get_params(),
            "feature_names_in_": list(self.feature_names_in_),
            "groups_": self.groups_,
            "x_mean_": self.x_mean_.tolist(),
            "x_scale_": self.x_scale_.tolist(),
            "y_mean_": self.y_mean_.tolist(),
            "y_scale_": self.y_scale_.tolist(),
            "n_outputs_": self.n_outputs_,
            "target_ndim_": self.target_ndim_,
            "best_epoch_": self.best_epoch_,
            "history_": self.history_,
            "validation_indices_": self.validation_indices_.tolist(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory `path`: tensors-only state dict + JSON (no pickled code)."""
        config = self._config()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.net_.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _atomic_write_bytes(folder / WEIGHTS_FILE, buffer.getvalue())
        _atomic_write_bytes(folder / CONFIG_FILE, json.dumps(config, indent=1).encode())
        return folder

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> GroupAttentionRegressor:
        """Load a model written by `save`; the weights are read with torch.load(weights_only=True)."""
        folder = Path(path)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a saved GroupAttentionRegressor: expected {CONFIG_FILE} and {WEIGHTS_FILE} in it"
            )
        config = json.loads(config_path.read_text())
        if config.get("class") != cls.__name__ or config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{config_path} holds {config.get('class')!r} format {config.get('format_version')!r}; "
                f"expected {cls.__name__!r} format {FORMAT_VERSION}"
            )
        if device is not None:
            config["params"]["device"] = device
        return cls._restore(config, lambda model: torch.load(weights_path, map_location=model.device,
                                                             weights_only=True))

    @classmethod
    def _restore(cls, config: dict[str, Any], weights: Any) -> GroupAttentionRegressor:
        """The model ``config`` (what :meth:`_config` gives) describes, its network's tensors from
        ``weights(model)``."""
        model = cls(**config["params"])
        model.feature_names_in_ = np.asarray(config["feature_names_in_"], dtype=object)
        model.n_features_in_ = len(model.feature_names_in_)
        model.groups_ = config["groups_"]
        for name in ("x_mean_", "x_scale_", "y_mean_", "y_scale_"):
            setattr(model, name, np.asarray(config[name], dtype=np.float64))
        model.n_outputs_ = int(config["n_outputs_"])
        model.target_ndim_ = int(config["target_ndim_"])
        model.best_epoch_ = int(config["best_epoch_"])
        model.history_ = config["history_"]
        model.validation_indices_ = np.asarray(config["validation_indices_"], dtype=np.int64)
        state = weights(model)
        with torch.device("meta"):  # no random init (and no use of the caller's RNG): weights come from disk
            net = model._build_net()
        net.load_state_dict(state, assign=True)
        model.net_ = net.eval()
        return model

    # ------------------------------------------------ state (perfcast.models.persistence)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted configuration (JSON) and the network's tensors as arrays (``net.<name>``)."""
        config = self._config()
        arrays = {"validation_indices_": np.asarray(config.pop("validation_indices_"), dtype=np.int64)}
        arrays |= {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        return config, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> GroupAttentionRegressor:
        config = {**params, "validation_indices_": arrays["validation_indices_"]}
        return cls._restore(config, lambda model: {k[4:]: torch.from_numpy(np.array(v)).to(model.device)
                                                   for k, v in arrays.items() if k.startswith("net.")})


@contextmanager
def _warnings_silenced() -> Iterator[None]:
    """nanmean/nanstd warn on all-NaN columns; those are handled (mean 0, scale 1) right after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
