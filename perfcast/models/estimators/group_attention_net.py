"""The NCPP-style group-attention network (torch) and the torch settings a reproducible fit needs.

Following NCPP ("Towards CPU Performance Prediction", Intel / PerfCastDB), every feature becomes a token,
self-attention mixes the tokens *within* each group, each group is pooled into one group token, and
self-attention mixes the group tokens *across* groups. Two defects of the reference code are fixed on
purpose: its cross-group attention output is computed but never reaches the output layer, and its scores are
divided by d²·heads. Here the output head reads both the pooled within-group tokens and the cross-group
tokens, and ``torch.nn.MultiheadAttention`` scales scores by 1/√d_head. The scikit-learn side (scaling,
splits, early stopping, saving) is :class:`~perfcast.models.estimators.group_attention.GroupAttentionRegressor`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class GroupAttentionNet(nn.Module):
    """Feature tokens → within-group attention → pooled group tokens → cross-group attention → head."""

    def __init__(
        self,
        token_index: torch.Tensor,
        n_features: int,
        n_outputs: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        n_groups = token_index.shape[0]
        # (groups, longest group) positions into the feature axis; -1 pads the shorter groups
        self.register_buffer("token_index", token_index.clamp(min=0))
        self.register_buffer("token_pad", token_index < 0)
        # a token is value × per-feature direction + per-feature id embedding (or a learned "missing" token)
        self.value_weight = nn.Parameter(torch.randn(n_features, d_model))
        self.feature_embedding = nn.Parameter(0.02 * torch.randn(n_features, d_model))
        self.missing_embedding = nn.Parameter(0.02 * torch.randn(n_features, d_model))
        self.group_embedding = nn.Parameter(0.02 * torch.randn(n_groups, d_model))
        self.within = self._encoder(d_model, n_heads, n_layers, dropout)
        self.across = self._encoder(d_model, n_heads, n_layers, dropout)
        self.head = nn.Sequential(
            nn.Linear(2 * n_groups * d_model, d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_model, n_outputs),
        )

    @staticmethod
    def _encoder(d_model: int, n_heads: int, n_layers: int, dropout: float) -> nn.TransformerEncoder:
        # pre-norm keeps the raw token (and so the feature's magnitude) on the residual path
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """values, missing: (batch, features) standardised inputs and NaN mask → (batch, outputs)."""
        tokens = values.unsqueeze(-1) * self.value_weight + self.feature_embedding
        tokens = torch.where(missing.unsqueeze(-1), self.missing_embedding, tokens)
        grouped = tokens[:, self.token_index] + self.group_embedding[:, None, :]  # (B, G, L, d)
        batch, n_groups, length, d_model = grouped.shape
        pad = self.token_pad.expand(batch, n_groups, length).reshape(batch * n_groups, length)
        within = self.within(grouped.reshape(batch * n_groups, length, d_model), src_key_padding_mask=pad)
        keep = (~self.token_pad).unsqueeze(-1).to(within.dtype)  # (G, L, 1)
        pooled = (within.reshape(batch, n_groups, length, d_model) * keep).sum(2) / keep.sum(1)
        across = self.across(pooled)
        return self.head(torch.cat([pooled.flatten(1), across.flatten(1)], dim=1))


def masked_sse(pred: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of squared errors over observed targets only, and how many there were (NaN targets carry no loss)."""
    diff = torch.where(observed, pred - target, torch.zeros_like(pred))
    return diff.square().sum(), int(observed.sum())


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Use n_threads torch threads for the block only (None: leave the caller's setting alone)."""
    if n_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def reproducible(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and enable deterministic kernels for the block, then restore the caller's RNG and flags."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
