"""The first layer of every encoder: a token embedding, or a linear projection of numeric features.

Why one place: the same encoders, norms and instruments serve text (``tokens[B, T]`` ids) and numeric
sequences (``features[B, T, F]``); only this layer differs. ``input_batch_norm`` puts masked batch norm
on the raw features before the projection: "batch norm as the first layer", the network's own answer
to inputs on different ranges, beside normalizing the data (``data.input_transform``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from normbench.errors import ConfigError
from normbench.norms import build_norm


class FeatureProjection(nn.Module):
    """``features[B, T, F]`` -> ``[B, T, dim]``: optional masked batch norm of the raw features, then a Linear."""

    def __init__(self, num_features: int, dim: int, input_batch_norm: bool = False, sync: bool = False) -> None:
        super().__init__()
        norm = {"name": "batch_masked", "sync": sync}  # sync: under DDP, statistics of the global batch (norm.sync)
        self.input_norm = build_norm(norm, num_features) if input_batch_norm else None
        self.proj = nn.Linear(num_features, dim)

    def forward(self, features: Tensor, mask: Tensor | None) -> Tensor:
        if self.input_norm is not None:
            features = self.input_norm(features, mask)
        return self.proj(features)


def pop_input_norm(norm: Mapping[str, Any] | str, input_batch_norm: bool) -> tuple[Mapping[str, Any] | str, bool]:
    """The norm config without its ``input_batch_norm`` key (``norm=input_batch`` sets it, so that a sweep can
    list "batch norm on the input" beside the norms), and whether the input batch norm is on (either switch)."""
    if isinstance(norm, str) or "input_batch_norm" not in norm:
        return norm, bool(input_batch_norm)
    rest = {k: v for k, v in norm.items() if k != "input_batch_norm"}
    return rest, bool(input_batch_norm) or bool(norm["input_batch_norm"])


def norm_sync(norm: Mapping[str, Any] | str) -> bool:
    """``norm.sync``: the input batch norm all-reduces its statistics under DDP when the other norms do."""
    return False if isinstance(norm, str) else bool(norm.get("sync", False))


def check_inputs(vocab_size: int | None, num_features: int | None, input_batch_norm: bool) -> None:
    """Exactly one of a vocabulary (tokens) or a feature count (numeric); the input norm needs features."""
    if (vocab_size is None) == (num_features is None):
        raise ConfigError(
            f"an encoder takes tokens (vocab_size) or numeric features (num_features), got both or none: "
            f"vocab_size={vocab_size}, num_features={num_features}"
        )
    if input_batch_norm and num_features is None:
        raise ConfigError(
            "model.input_batch_norm=true normalizes numeric input features, but this data gives token ids; "
            "accepted: a numeric task (data=japanese_vowels, data=plaid) or model.input_batch_norm=false"
        )
