"""Every normalization layer of the benchmark, behind one interface and one factory.

All norms take ``x`` of shape ``[..., C]`` (``[B, T, C]`` from a Transformer, ``[B, C]`` from a
recurrent cell's time step) and ``mask`` of shape ``x.shape[:-1]`` (True = real token) and return
the shape of ``x``. Layer-statistic norms ignore the mask; batch-statistic norms decide which
positions their statistics come from, which is exactly what the experiments compare.
Where the math equals a native PyTorch op, that op does the work (speed, and agreement by design).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normbench.errors import BatchStatisticsError, ConfigError


class SequenceNorm(nn.Module):
    """Base class: ``forward(x[..., C], mask[...]) -> [..., C]``."""

    #: statistics come from the batch (the output at one token depends on other examples)
    uses_batch_stats: ClassVar[bool] = False
    #: the output at a token depends on that token alone (lets RNNs hoist the input-side norm)
    per_token: ClassVar[bool] = True

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class NoNorm(SequenceNorm):
    """Identity: the unnormalized baseline."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x


class LayerNorm(SequenceNorm):
    """Layer normalization (Ba et al. 2016): statistics over the channels of each token."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return F.layer_norm(x, (self.num_features,), self.weight, self.bias, self.eps)


class RMSNorm(SequenceNorm):
    """RMS normalization (Zhang & Sennrich 2019): layer norm without centring or bias."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return F.rms_norm(x, (self.num_features,), self.weight, self.eps)


class _BatchStatNorm(SequenceNorm):
    """Batch normalization over the positions a subclass selects, with running statistics.

    Training uses the statistics of the selected positions and updates the running ones from them
    (unbiased variance, exponential moving average, exactly as ``nn.BatchNorm1d``); eval mode uses
    the running statistics. ``small_batch`` says what a training call with fewer than two selected
    values per channel does: ``"error"`` raises a one-line ``BatchStatisticsError``; ``"running"``
    (what recurrent cells ask for at the time steps where fewer than two sequences are still
    running) normalizes those positions with the running statistics and does not update them.
    """

    uses_batch_stats = True
    per_token = False
    SMALL_BATCH_MODES: ClassVar[tuple[str, ...]] = ("error", "running")

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        small_batch: str = "error",
    ) -> None:
        super().__init__(num_features)
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"norm.momentum={momentum} is out of range; accepted: 0 < momentum <= 1")
        if small_batch not in self.SMALL_BATCH_MODES:
            raise ConfigError(f"small_batch={small_batch!r} is unknown; accepted: {self.SMALL_BATCH_MODES}")
        self.eps = eps
        self.momentum = momentum
        self.small_batch = small_batch
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _batch_norm(self, rows: Tensor) -> Tensor:
        """``nn.BatchNorm1d`` on ``rows[N, C]``: batch statistics in training, running ones in eval."""
        use_batch = self.training and rows.shape[0] >= 2
        if self.training and not use_batch and self.small_batch == "error":
            raise BatchStatisticsError(
                f"norm={self.name} got {rows.shape[0]} real value per channel in a training batch; "
                "batch statistics need at least 2: use data.batch_size >= 2 (and sequences longer than "
                "1 token), or a norm without batch statistics (norm=layer, norm=rms)"
            )
        if use_batch:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            rows,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=use_batch,
            momentum=self.momentum,
            eps=self.eps,
        )

    @property
    def name(self) -> str:
        return next(key for key, cls in NORMS.items() if cls is type(self))


class BatchNorm(_BatchStatNorm):
    """Naive batch norm: statistics over every position, padding included.

    This is what ``nn.BatchNorm1d`` does when it is fed padded sequences: the deliberate baseline
    whose statistics drift with the padding share of each batch.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self._batch_norm(x.reshape(-1, self.num_features)).view_as(x)


class MaskedBatchNorm(_BatchStatNorm):
    """Padding-aware batch norm: statistics over real tokens only, running statistics updated from them.

    Equals ``nn.BatchNorm1d`` applied to the packed real tokens; padding positions output 0, so
    neither the length nor the values of the padding can reach the real tokens.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return self._batch_norm(x.reshape(-1, self.num_features)).view_as(x)
        if mask.shape != x.shape[:-1]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match x shape {tuple(x.shape)}")
        normalized = self._batch_norm(x[mask])
        return x.new_zeros(x.shape).index_put((mask,), normalized)


#: every norm selectable as ``norm=<name>``
NORMS: dict[str, type[SequenceNorm]] = {
    "none": NoNorm,
    "batch": BatchNorm,
    "batch_masked": MaskedBatchNorm,
    "layer": LayerNorm,
    "rms": RMSNorm,
}


def build_norm(cfg: Mapping[str, Any] | str, num_features: int, *, recurrent: bool = False) -> SequenceNorm:
    """Build the norm a ``norm`` config (``{"name": ..., **options}``) or a bare name describes.

    ``recurrent=True`` is for norms inside a recurrent cell, called once per time step: there a
    step where fewer than two sequences are still running falls back to running statistics
    instead of failing (the model checks the batch as a whole).
    """
    options = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
    name = options.pop("name", None)
    if name not in NORMS:
        raise ConfigError(f"unknown norm {name!r}; accepted: {', '.join(NORMS)}")
    cls = NORMS[name]
    if recurrent and cls.uses_batch_stats:
        options.setdefault("small_batch", "running")
    try:
        return cls(num_features, **options)
    except TypeError as err:
        accepted = list(inspect.signature(cls.__init__).parameters)[2:]
        raise ConfigError(f"norm={name}: {err}; accepted options: {accepted}") from None
