"""The first layer of every encoder: a token embedding, or a linear projection of numeric features.

Why one place: the same encoders, norms and instruments serve text (``tokens[B, T]`` ids) and numeric
sequences (``features[B, T, F]``); only this layer differs. ``input_norm`` (masked batch norm, with
``model.input_batch_norm`` or ``norm=input_batch``) normalizes the raw features before the projection: "batch
norm as the first layer", the network's own answer to inputs on different ranges, beside normalizing the data
(``data.input_transform``).
"""

from __future__ import annotations

from torch import Tensor, nn

from normbench.errors import ConfigError
from normbench.norm_factory import NormFactory


class FeatureProjection(nn.Module):
    """``features[B, T, F]`` -> ``[B, T, dim]``: the input norm's (if any) of the raw features, then a Linear."""

    def __init__(self, num_features: int, dim: int, input_norm: NormFactory | None = None) -> None:
        super().__init__()
        self.input_norm = input_norm(num_features) if input_norm is not None else None
        self.proj = nn.Linear(num_features, dim)

    def forward(self, features: Tensor, mask: Tensor | None) -> Tensor:
        if self.input_norm is not None:
            features = self.input_norm(features, mask)
        return self.proj(features)


def check_inputs(vocab_size: int | None, num_features: int | None, input_norm: NormFactory | None) -> None:
    """Exactly one of a vocabulary (tokens) or a feature count (numeric); the input norm needs features."""
    if (vocab_size is None) == (num_features is None):
        raise ConfigError(
            f"an encoder takes tokens (vocab_size) or numeric features (num_features), got both or none: "
            f"vocab_size={vocab_size}, num_features={num_features}"
        )
    if input_norm is not None and num_features is None:
        raise ConfigError(
            "model.input_batch_norm=true normalizes numeric input features, but this data gives token ids; "
            "accepted: a numeric task (data=japanese_vowels, data=plaid) or model.input_batch_norm=false"
        )
