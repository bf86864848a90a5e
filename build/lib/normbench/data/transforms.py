"""Per-channel input transforms of numeric sequences, fitted on the training split's real steps only.

Why here and not in the model: "why normalize inputs at all" is the question of the ``input_scale``
entry, so the transform is a data setting (``data.input_transform``) whose statistics come from the
training split alone (fitting on validation or test data would leak them into training) and from real
steps alone (padding and missing values are not data). ``data.channel_scales`` multiplies channels by
given factors first, to make "features on different ranges" a controlled variable on real data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from normbench.errors import ConfigError

#: none: raw values; minmax: each channel to [0, 1]; standardize: each channel to mean 0, variance 1
TRANSFORMS = ("none", "minmax", "standardize")


def check_transform(kind: Any) -> str:
    if kind not in TRANSFORMS:
        raise ConfigError(f"data.input_transform={kind!r} is unknown; accepted: {', '.join(TRANSFORMS)}")
    return kind


def channel_factors(scales: Sequence[float] | None, num_channels: int) -> Tensor:
    """``data.channel_scales`` cycled over the channels (``[1, 100]`` on 3 channels: 1, 100, 1); None: all 1."""
    if scales is None:
        return torch.ones(num_channels)
    values = list(scales) if isinstance(scales, Sequence) and not isinstance(scales, str) else None
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values):
        raise ConfigError(
            f"data.channel_scales={scales!r} is out of range; accepted: null or a list of numbers > 0 "
            "(cycled over the channels, e.g. [1, 100, 10000])"
        )
    return torch.tensor([float(values[c % len(values)]) for c in range(num_channels)])


@dataclass(frozen=True)
class ChannelTransform:
    """``(x - shift) / scale`` per channel, with the statistics it was fitted to."""

    kind: str
    shift: Tensor
    scale: Tensor

    def __call__(self, features: Tensor) -> Tensor:
        return ((features.double() - self.shift) / self.scale).to(features.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}


def fit_channel_transform(kind: str, features: Tensor, mask: Tensor) -> ChannelTransform:
    """Fit ``kind`` to ``features[N, T, C]`` over the steps where ``mask[N, T]`` is True and the value is
    not NaN (missing). A channel with no spread (or no values) keeps scale 1, so it is shifted, never blown up."""
    check_transform(kind)
    x = features.double()
    real = mask.unsqueeze(-1) & ~torch.isnan(x)
    channels = x.shape[-1]
    shift, scale = torch.zeros(channels, dtype=torch.float64), torch.ones(channels, dtype=torch.float64)
    count = real.sum(dim=(0, 1))
    present = count > 0
    if kind == "minmax":
        low = torch.where(real, x, torch.inf).amin(dim=(0, 1))
        high = torch.where(real, x, -torch.inf).amax(dim=(0, 1))
        shift = torch.where(present, low, shift)
        scale = torch.where(present & (high > low), high - low, scale)
    elif kind == "standardize":
        mean = torch.where(real, x, 0.0).sum(dim=(0, 1)) / count.clamp_min(1)
        var = torch.where(real, (x - mean) ** 2, 0.0).sum(dim=(0, 1)) / count.clamp_min(1)
        shift = torch.where(present, mean, shift)
        scale = torch.where(var > 0, var.sqrt(), scale)
    return ChannelTransform(kind, shift, scale)
