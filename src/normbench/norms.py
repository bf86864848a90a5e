"""Every normalization layer of the benchmark, behind one interface (normbench.norm_factory builds them from config).

All norms take ``x`` of shape ``[..., C]`` (``[B, T, C]`` from a Transformer, ``[B, C]`` from a
recurrent cell's time step) and ``mask`` of shape ``x.shape[:-1]`` (True = real token) and return
the shape of ``x``; recurrent cells also pass ``step`` (the time step), which only per-step norms use.
Layer-statistic norms ignore the mask; batch-statistic norms decide which positions their statistics
come from, which is exactly what the experiments compare. Where the math equals a native PyTorch op,
that op does the work (speed, and agreement by design).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from normbench.distributed import all_reduce_sum, distributed_world
from normbench.errors import BatchStatisticsError, ConfigError
from normbench.norm_kinds import BATCH, NONE, TOKEN


class SequenceNorm(nn.Module):
    """Base class: ``forward(x[..., C], mask[...], step=None) -> [..., C]``."""

    #: statistics come from the batch (the output at one token depends on other examples)
    uses_batch_stats: ClassVar[bool] = False
    #: the output at a token depends on that token alone (lets RNNs hoist the input-side norm)
    per_token: ClassVar[bool] = True
    #: its option in conf/norm/ (``norm=<option>``): NORMS and the one-line errors use it
    option: ClassVar[str | None] = None
    #: ``normalize_steps`` gives a recurrent cell's input side for all time steps in one call
    steps_at_once: ClassVar[bool] = False
    #: padding never enters the statistics of the real tokens (a recurrent cell may leave padded rows out of a call)
    masks_padding: ClassVar[bool] = False

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        raise NotImplementedError


class NoNorm(SequenceNorm):
    """Identity: the unnormalized baseline."""

    option = "none"

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return x


class LayerNorm(SequenceNorm):
    """Layer normalization (Ba et al. 2016): statistics over the channels of each token."""

    option = "layer"

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return F.layer_norm(x, (self.num_features,), self.weight, self.bias, self.eps)


class RMSNorm(SequenceNorm):
    """RMS normalization (Zhang & Sennrich 2019): layer norm without centring or bias."""

    option = "rms"

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return F.rms_norm(x, (self.num_features,), self.weight, self.eps)


class GroupNorm(SequenceNorm):
    """Group normalization (Wu & He 2018) over the channels of each token: layer norm per channel group."""

    option = "group"

    def __init__(self, num_features: int, groups: int = 4, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features)
        if groups < 1 or num_features % groups:
            raise ConfigError(f"norm.groups={groups} must divide the {num_features} channels of the layer")
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        rows = x.reshape(-1, self.num_features)
        return F.group_norm(rows, self.groups, self.weight, self.bias, self.eps).view_as(x)


class ScaleNorm(SequenceNorm):
    """ScaleNorm (Nguyen & Salazar 2019): ``g * x / ||x||`` with one learned scalar ``g`` (init sqrt(C))."""

    option = "scale"

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features)
        self.eps = eps
        self.scale = nn.Parameter(torch.tensor(math.sqrt(num_features)))

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return self.scale * x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)


# --- batch statistics -------------------------------------------------------------------------------


class _BatchStatNorm(SequenceNorm):
    """Normalization with statistics of the batch in training and running statistics in eval mode.

    Options shared by every batch-statistic norm:

    - ``momentum``: running statistics are an exponential moving average with this weight for the
      newest batch (unbiased variance, as ``nn.BatchNorm1d``), updated from real tokens only.
    - ``sync``: under DDP, all-reduce the masked sums and counts so every process normalizes with the
      statistics of the global batch (``trainer.sync_batchnorm`` converts only ``nn.BatchNorm*``).
    - ``small_batch``: what a training call with fewer than two real values per channel does:
      ``"error"`` raises a one-line ``BatchStatisticsError``; ``"running"`` (what recurrent cells ask
      for at time steps where fewer than two sequences are still running) normalizes with the
      running statistics and leaves them as they are; ``None``: ``"error"``, unless the model asks for
      ``"running"`` (normbench.norm_factory.recurrent).

    Instruments set ``update_running = False`` to evaluate with batch statistics without touching
    the running ones, and ``fluctuation`` to a ``FluctuationMeter`` to record how far each batch's
    statistics are from the running ones.
    """

    uses_batch_stats = True
    per_token = False
    masks_padding = True
    SMALL_BATCH_MODES: ClassVar[tuple[str, ...]] = ("error", "running")

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        small_batch: str | None = None,
        sync: bool = False,
    ) -> None:
        super().__init__(num_features)
        small_batch = small_batch or "error"
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"norm.momentum={momentum} is out of range; accepted: 0 < momentum <= 1")
        if small_batch not in self.SMALL_BATCH_MODES:
            raise ConfigError(f"small_batch={small_batch!r} is unknown; accepted: {self.SMALL_BATCH_MODES}")
        self.eps, self.momentum, self.small_batch, self.sync = eps, momentum, small_batch, sync
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.update_running = True
        self.fluctuation: FluctuationMeter | None = None
        #: the optimizer step, set by the LightningModule for norms with a schedule (a recurrent cell
        #: calls its norms once per time step, so their own call count is not the step)
        self.training_step: int | None = None

    def schedule_step(self) -> int:
        return self.training_step if self.training_step is not None else int(self.num_batches_tracked)

    def _too_few(self, count: int) -> BatchStatisticsError:
        return BatchStatisticsError(
            f"norm={self.option or type(self).__name__} got {count} real value per channel in a training batch; "
            "batch statistics need at least 2: use data.batch_size >= 2 (and sequences longer than 1 token), "
            "or a norm without batch statistics (norm=layer, norm=rms)"
        )

    def _enough(self, count: int) -> bool:
        """Whether ``count`` values per channel make batch statistics (at least 2); raises where they are required."""
        if count < 2 and self.small_batch == "error":
            raise self._too_few(count)
        return count >= 2

    def _use_batch_stats(self, rows: Tensor) -> bool:
        """Whether this call normalizes ``rows[N, C]`` with batch statistics (raises when that is required
        but impossible: fewer than two rows, over all processes when ``sync`` is on)."""
        if not self.training:
            return False
        return self._enough(self._global_count(rows) if self.sync else rows.shape[0])

    def _batch_moments(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """``_moments(rows)`` where this call uses batch statistics, else None (``_use_batch_stats``'s rule). Under
        ``sync`` the global count comes with the sums' all-reduce, so the decision costs no collective of its own."""
        if not self.sync:
            return self._moments(rows) if self._use_batch_stats(rows) else None
        if not self.training:
            return None
        moments = self._moments(rows)
        return moments if self._enough(int(moments[2].item())) else None

    def _moments(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, biased variance and count of ``rows[N, C]``, over all processes when ``sync`` is on: two
        all-reduces, the count with the sums, then the squared deviations from the global mean (two passes keep
        the variance accurate when the mean is large compared with the spread)."""
        sums = rows.sum(0, dtype=torch.promote_types(rows.dtype, torch.float32))  # float32 sums of bf16 rows
        count_and_sums = self._reduce(torch.cat([sums.new_tensor([float(rows.shape[0])]), sums]))
        count = count_and_sums[:1]
        mean = count_and_sums[1:] / count
        var = self._reduce((rows - mean).pow(2).sum(0)) / count
        return mean, var, count

    def _update_running(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        if not self.update_running:
            return
        with torch.no_grad():
            unbiased = var * (count / (count - 1))
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)

    def _record(self, mean: Tensor | None, var: Tensor, running_mean: Tensor | None, running_var: Tensor) -> None:
        if self.fluctuation is not None:
            self.fluctuation.add(mean, var, running_mean, running_var, self.eps)

    def _normalize_rows(self, rows: Tensor) -> Tensor:
        """Batch norm of ``rows[N, C]``: ``nn.BatchNorm1d``'s math with the options above."""
        if self.sync or self.fluctuation is not None:
            moments = self._batch_moments(rows)
        elif self._use_batch_stats(rows):
            return self._native_batch_norm(rows, self.weight, self.bias)
        else:
            moments = None
        if moments is None:
            return self._with_running_stats(rows)
        mean, var, count = moments
        self._record(mean, var, self.running_mean, self.running_var)
        self._update_running(mean, var, count)
        return self._affine((rows - mean) * torch.rsqrt(var + self.eps))

    def _native_batch_norm(self, rows: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        """``nn.BatchNorm1d``'s training kernel on ``rows[N, C]`` (fused forward and backward), updating the running
        statistics unless ``update_running`` is off."""
        running = (self.running_mean, self.running_var) if self.update_running else (None, None)
        if self.update_running:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(rows, *running, weight, bias, True, self.momentum, self.eps)

    def _one_pass_moments(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and biased variance of ``rows[N, C]`` from the native kernel's one-pass reduction, without autograd,
        in the running statistics' dtype: the kernel rounds them to the rows' dtype, and a bf16 mean near 100 (under
        autocast) is off by up to 0.25."""
        return torch.batch_norm_update_stats(rows.detach().to(self.running_mean.dtype), None, None, 0.0)

    def _reduce(self, tensor: Tensor) -> Tensor:
        """A sum over processes under ``sync``, else this process's own."""
        return all_reduce_sum(tensor) if self.sync else tensor

    def _with_running_stats(self, rows: Tensor) -> Tensor:
        """``rows[N, C]`` normalized with the running statistics. In training (a recurrent step with fewer than two
        real rows) with copies of them: the backward reads them, and a later step's update changes the buffers."""
        mean, var = self.running_mean, self.running_var
        if self.training:
            mean, var = mean.clone(), var.clone()
        return F.batch_norm(rows, mean, var, self.weight, self.bias, False, 0.0, self.eps)

    def _global_count(self, rows: Tensor) -> int:
        if not distributed_world():
            return rows.shape[0]
        count = rows.new_tensor([float(rows.shape[0])])
        dist.all_reduce(count)
        return int(count.item())

    def _affine(self, normalized: Tensor) -> Tensor:
        if self.weight is None:
            return normalized
        return normalized * self.weight + self.bias

    def _masked_rows(self, x: Tensor, mask: Tensor | None, normalize) -> Tensor:
        """Apply ``normalize`` to the real tokens only; padding outputs 0 and gets no gradient.

        Rows are gathered with ``index_select`` and written back with ``index_add_`` into zeros: with the
        row indices computed once, both directions are plain row copies (boolean indexing and an
        out-of-place ``index_put`` cost a search and a full copy more each way; 1.7x slower on CPU).
        """
        if mask is None and x.dim() == 2:  # a recurrent step's running rows: no view to make (each costs autograd)
            return normalize(x)
        flat = x.reshape(-1, self.num_features)
        if mask is None:
            return normalize(flat).view_as(x)
        if mask.shape != x.shape[:-1]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match x shape {tuple(x.shape)}")
        rows = mask.reshape(-1).nonzero().squeeze(1)
        if len(rows) == len(flat):  # no padding (a language model's chunks): nothing to gather, the same numbers
            return normalize(flat).to(x.dtype).view_as(x)
        normalized = normalize(flat.index_select(0, rows)).to(x.dtype)
        return flat.new_zeros(flat.shape).index_add_(0, rows, normalized).view_as(x)

    def normalize_steps(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x[B, T, C]`` normalized exactly as T calls ``self(x[:, t], mask[:, t], step=t)`` in order would (each
        step's statistics over the batch, the running statistics updated once per step, a step with fewer than two
        values on the running statistics in force there), in a few passes over ``[B, T, C]`` instead of T calls:
        a recurrent cell's input side does not depend on the recurrence (``steps_at_once``). The outputs at padded
        positions are left unspecified (the cell carries its state over them), and ``x`` must be finite there."""
        channels, dtype = self.num_features, x.dtype
        x = x.to(torch.promote_types(dtype, torch.float32))  # statistics in float32, as F.batch_norm under autocast
        real = mask if self.masks_padding else torch.ones_like(mask)
        if not self.training:
            out = F.batch_norm(
                x.reshape(-1, channels),
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            ).view_as(x)
            return out.to(dtype)
        weight = real.to(x.dtype)
        count, mean, centred, var = self._moments_per_step(x, weight)
        if self.small_batch == "error" and bool((count < 2).any()):
            raise self._too_few(int(count.min()))
        usable = count >= 2
        run_mean, run_var = self._running_before_steps(mean, var, count, usable.squeeze(-1))
        if self.fluctuation is not None:
            for t in usable.squeeze(-1).nonzero().squeeze(1).tolist():
                self._record(mean[t], var[t], run_mean[t], run_var[t])
        return self._normalized_per_step(x, weight, count, mean, centred, var, run_mean, run_var).to(dtype)

    @torch.no_grad()
    def _moments_per_step(
        self, x: Tensor, weight: Tensor, zeroed: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Count ``[T, 1]``, mean and biased variance ``[T, C]`` over the batch at each step of ``x[B, T, C]``
        (``weight[B, T]``: 1 where a value counts, over processes under ``sync``), and ``(x - mean) * weight``.
        ``zeroed``: ``x`` is already 0 where ``weight`` is (a pass fewer)."""
        weight = weight[..., None]
        if not zeroed:
            x = x * weight
        sums = x.sum(0, dtype=torch.promote_types(x.dtype, torch.float32))  # float32 sums of bf16 activations
        count_and_sums = self._reduce(torch.cat([weight.sum(0).to(sums.dtype), sums], 1))  # one all-reduce for both
        count = count_and_sums[:, :1]
        mean = count_and_sums[:, 1:] / count.clamp_min(1)
        centred = torch.addcmul(x, weight, mean, value=-1)  # x - mean where weight is 1, 0 where x is 0
        var = self._reduce(centred.square().sum(0)) / count.clamp_min(1)
        return count, mean, centred, var

    def _normalized_per_step(
        self,
        x: Tensor,
        weight: Tensor,
        count: Tensor,
        mean: Tensor,
        centred: Tensor,
        var: Tensor,
        run_mean: Tensor,
        run_var: Tensor,
    ) -> Tensor:
        """Each step normalized with its batch statistics where it has two values or more, else with the running
        ones (``x - running mean`` is ``centred + (mean - running mean)``), then the affine map; 0 where ``weight``
        is 0 (``_StepNormFunction``)."""
        usable = count >= 2
        rstd = torch.rsqrt(torch.where(usable, var, run_var) + self.eps)
        shift = torch.where(usable, 0.0, mean - run_mean)
        share = usable / count.clamp_min(1)
        return _StepNormFunction.apply(
            x, self.weight, self.bias, centred, weight[..., None], rstd, shift, share, self._reduce
        )

    def _scaled(self, centred: Tensor, var: Tensor, shift: Tensor) -> Tensor:
        """``(centred + shift) / sqrt(var + eps)``, then the affine map, in one pass over ``centred``."""
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        offset = shift * scale
        if self.bias is not None:
            offset = offset + self.bias
        return torch.addcmul(offset, centred, scale)

    @torch.no_grad()
    def _running_before_steps(self, mean: Tensor, var: Tensor, count: Tensor, usable: Tensor) -> tuple[Tensor, Tensor]:
        """The running statistics in force at each step ``[T, C]`` when every usable step in turn updates them
        (``r <- r + momentum * (stat - r)``), and the buffers left as the last update leaves them. In closed form:
        ``r_t = (1-m)^k_t r_0 + sum over usable s < t of m (1-m)^(k_t - k_s - 1) stat_s``, k_t the updates before t."""
        steps = mean.shape[0]
        unbiased = var * (count / (count - 1).clamp_min(1))
        if not self.update_running:
            return self.running_mean.expand_as(mean), self.running_var.expand_as(var)
        used = usable.to(mean.dtype)
        before = torch.cumsum(used, 0) - used  # k_t
        k = torch.cat([before, used.sum()[None]])  # and after the last step
        earlier = torch.ones(steps + 1, steps, dtype=torch.bool, device=mean.device).tril(-1) & usable[None, :]
        decay = 1.0 - self.momentum
        weights = torch.where(earlier, self.momentum * decay ** (k[:, None] - before[None, :] - 1), 0.0)
        keep = (decay**k)[:, None]
        run_mean = keep * self.running_mean + weights @ mean.to(weights.dtype)
        run_var = keep * self.running_var + weights @ unbiased.to(weights.dtype)
        self.running_mean.copy_(run_mean[-1])
        self.running_var.copy_(run_var[-1])
        self.num_batches_tracked.add_(int(used.sum()))
        return run_mean[:-1].to(mean.dtype), run_var[:-1].to(var.dtype)


class _StepNormFunction(torch.autograd.Function):
    """Batch norm over dim 0 of ``x[B, T, C]`` at each step with given statistics, and its backward in closed form:
    a handful of passes where autograd through the same ops makes three times as many.

    ``centred = (x - mean) * real`` (``real[B, T, 1]``: 1 at the values that count), ``rstd[T, C]`` of the variance
    in use, ``shift[T, C]`` added to ``centred`` before scaling (``mean - running mean`` at a step on running
    statistics), ``share[T, 1]``: ``1 / count`` at a step on batch statistics, 0 at one on running statistics (no
    gradient through them). ``reduce`` sums the input gradient's two reductions over processes under ``sync``
    (as ``nn.SyncBatchNorm``); the parameters' gradients stay this process's own, for DDP to average.
    Output: ``((centred + shift) * rstd * weight + bias) * real``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, centred, real, rstd, shift, share, reduce):  # noqa: ANN001
        scale = rstd if weight is None else rstd * weight
        offset = shift * scale if bias is None else torch.addcmul(bias, shift, scale)
        ctx.save_for_backward(centred, real, rstd, scale, shift, share)
        ctx.reduce, ctx.affine = reduce, weight is not None
        return torch.addcmul(offset, centred, scale).mul_(real)

    @staticmethod
    def backward(ctx, grad_y):  # noqa: ANN001
        centred, real, rstd, scale, shift, share = ctx.saved_tensors
        grad_real = grad_y * real
        sum_grad = grad_real.sum(0)
        sum_grad_centred = (grad_y * centred).sum(0)
        grad_weight = grad_bias = None
        if ctx.affine:
            grad_weight = (rstd * torch.addcmul(sum_grad_centred, shift, sum_grad)).sum(0)
            grad_bias = sum_grad.sum(0)
        mean_term = scale * share * ctx.reduce(sum_grad)
        centred_term = scale * rstd * rstd * share * ctx.reduce(sum_grad_centred)
        grad_x = torch.addcmul(-mean_term, grad_real, scale).mul_(real).addcmul_(centred, centred_term, value=-1)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


class BatchNorm(_BatchStatNorm):
    """Naive batch norm: statistics over every position, padding included.

    This is what ``nn.BatchNorm1d`` does when it is fed padded sequences: the deliberate baseline
    whose statistics drift with the padding share of each batch.
    """

    option = "batch"
    steps_at_once = True
    masks_padding = False

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return self._normalize_rows(x.reshape(-1, self.num_features)).view_as(x)


class MaskedBatchNorm(_BatchStatNorm):
    """Padding-aware batch norm: statistics over real tokens only, running statistics updated from them.

    Equals ``nn.BatchNorm1d`` applied to the packed real tokens; padding positions output 0, so
    neither the length nor the values of the padding can reach the real tokens.
    """

    option = "batch_masked"
    steps_at_once = True

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return self._masked_rows(x, mask, self._normalize_rows)


class StepBatchNorm(_BatchStatNorm):
    """Per-time-step batch norm (Cooijmans et al. 2016, "Recurrent Batch Normalization").

    Statistics are taken per time step over the sequences that are real at that step, and separate
    running statistics are kept for steps ``0 .. max_steps-1``. Past ``max_steps`` the paper reuses
    the statistics of the last step (``beyond="last"``); ``beyond="error"`` refuses such inputs instead.
    A step with fewer than two real values uses its running statistics. In a Transformer it is
    per-position batch norm over ``[B, T, C]``; in a recurrent cell it gets ``x[B, C]`` and ``step``.
    ``gamma_init=0.1`` is the paper's initialisation of the scale.
    """

    option = "batch_step"
    steps_at_once = True

    BEYOND: ClassVar[tuple[str, ...]] = ("last", "error")

    def __init__(
        self,
        num_features: int,
        max_steps: int = 64,
        beyond: str = "last",
        gamma_init: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(num_features, **common)
        if max_steps < 1:
            raise ConfigError(f"norm.max_steps={max_steps} is out of range; accepted: an integer >= 1")
        if beyond not in self.BEYOND:
            raise ConfigError(f"norm.beyond={beyond!r} is unknown; accepted: {', '.join(self.BEYOND)}")
        self.max_steps, self.beyond = max_steps, beyond
        if self.weight is not None:
            nn.init.constant_(self.weight, gamma_init)
        self.running_mean = torch.zeros(max_steps, num_features)
        self.running_var = torch.ones(max_steps, num_features)

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        native = self._native_steps(x, mask, step or 0)
        if native is not None:
            return native
        per_step = x.dim() == 2
        x3 = x[:, None] if per_step else x.reshape(x.shape[0], -1, self.num_features)
        if mask is None:
            mask = x.new_ones(x.shape[:-1], dtype=torch.bool)
        real = mask[:, None] if per_step else mask.reshape(x3.shape[:2])  # [B, T]
        first, length = step or 0, x3.shape[1]
        if self.beyond == "error" and first + length > self.max_steps:
            raise BatchStatisticsError(
                f"norm=batch_step has running statistics for {self.max_steps} steps, got step "
                f"{first + length - 1}; raise norm.max_steps or use norm.beyond=last (reuse the last step's)"
            )
        index = (torch.arange(length, device=x.device) + first).clamp(max=self.max_steps - 1)
        run_mean, run_var = self.running_mean[index], self.running_var[index]  # [T, C]
        if not self.training:  # padding values (even NaN) never reach the outputs, nor get a gradient
            out = torch.where(real[..., None], self._scaled(x3, run_var, -run_mean), 0.0)
            return out[:, 0] if per_step else out.view_as(x)
        if self.small_batch == "error":
            self._use_batch_stats(x3[real.any(1), 0])  # one row per real sequence
        weight = real.to(x3.dtype)
        with torch.no_grad():  # nor the sums: x is 0 there, and _StepNormFunction's gradient is too
            zeroed = torch.where(real[..., None], x3, 0.0)
        count, mean, centred, var = self._moments_per_step(zeroed, weight, zeroed=True)
        usable = count >= 2
        tracked = max(0, min(length, self.max_steps - first))  # the positions with running statistics of their own
        if self.fluctuation is not None:
            kept = usable[:tracked, 0]
            self._record(mean[:tracked][kept], var[:tracked][kept], run_mean[:tracked][kept], run_var[:tracked][kept])
        if self.update_running and tracked:
            self._update_steps(slice(first, first + tracked), mean[:tracked], var[:tracked], count[:tracked])
        out = self._normalized_per_step(x3, weight, count, mean, centred, var, run_mean, run_var)
        return out[:, 0] if per_step else out.view_as(x)

    def _native_steps(self, x: Tensor, mask: Tensor | None, first: int) -> Tensor | None:
        """Without padding, per-step batch norm is ``nn.BatchNorm1d`` over the batch with each (step, channel) a
        channel of its own: the native kernel on ``x[B, T * C]`` with the steps' rows of the running statistics. None
        where that does not hold (padding, ``sync``, the fluctuation meter, a step past ``max_steps``, fewer than two
        sequences in training): the general path decides there.

        In training the kernel updates copies of those rows, copied back after: autograd saves the running statistics
        it is given, and a view of the buffer would see every later step's update as a change to it."""
        batch, channels = x.shape[0], self.num_features
        length = x[0].numel() // channels if batch else 0
        if self.sync or self.fluctuation is not None or length == 0 or first + length > self.max_steps:
            return None
        if (self.training and batch < 2) or (mask is not None and not bool(mask.all())):
            return None
        steps = slice(first, first + length)
        weight, bias = self.weight, self.bias
        if weight is not None and length > 1:
            weight, bias = weight.repeat(length), bias.repeat(length)
        rows = x.reshape(batch, length * channels)
        running = self.running_mean[steps].view(-1), self.running_var[steps].view(-1)
        if not self.training:
            return F.batch_norm(rows, *running, weight, bias, False, 0.0, self.eps).view_as(x)
        if not self.update_running:
            return F.batch_norm(rows, None, None, weight, bias, True, 0.0, self.eps).view_as(x)
        updated = running[0].clone(), running[1].clone()
        out = F.batch_norm(rows, *updated, weight, bias, True, self.momentum, self.eps)
        running[0].copy_(updated[0])
        running[1].copy_(updated[1])
        self.num_batches_tracked.add_(1)
        return out.view_as(x)

    def normalize_steps(self, x: Tensor, mask: Tensor) -> Tensor:
        """Steps ``0 .. T-1`` at once: the ``[B, T, C]`` path is per position, the same as T per-step calls."""
        return self(x, mask)

    @torch.no_grad()
    def _update_steps(self, steps: slice, mean: Tensor, var: Tensor, count: Tensor) -> None:
        """The running statistics of ``steps`` move towards the batch's, where the batch had two or more values
        (elsewhere they stay): a ``where``, not a boolean index, so that no call waits for the device."""
        usable = count >= 2
        unbiased = var * (count / (count - 1).clamp_min(1))
        for buffer, stat in ((self.running_mean, mean), (self.running_var, unbiased)):
            old = buffer[steps]
            buffer[steps] = torch.where(usable, torch.lerp(old, stat.detach().to(old.dtype), self.momentum), old)
        self.num_batches_tracked.add_(usable.any().long())


class _PowerNormFunction(torch.autograd.Function):
    """PowerNorm's forward with a given quadratic mean and its approximate backward (Shen et al. 2020, Alg. 1).

    Backward: ``dL/dX = (g - nu * X_hat) / psi`` with ``g = gamma * dL/dY``, then
    ``nu <- nu * (1 - (1 - alpha) * Gamma) + (1 - alpha) * Lambda`` with ``Gamma = mean(X_hat^2)`` and
    ``Lambda = mean(X_hat * g)`` over the real tokens (Eq. 8), all-reduced when ``sync`` is on. With
    ``X_hat = X * scale``: ``Gamma = scale^2 * mean(X^2)``, the batch's quadratic mean the forward already has, and
    ``Lambda = scale * gamma * mean(X * dL/dY)``, whose sum ``dL/dgamma`` needs too: one reduction serves both.
    """

    @staticmethod
    def forward(ctx, rows, weight, bias, scale, batch_psi2, nu, alpha_bwd, update_nu, reduce):  # noqa: ANN001
        ctx.save_for_backward(rows, weight, scale, batch_psi2)
        # nu is read when the backward runs and updated in place there: kept outside save_for_backward
        ctx.nu, ctx.alpha_bwd, ctx.update_nu, ctx.reduce = nu, alpha_bwd, update_nu, reduce
        return torch.addcmul(bias, rows, scale * weight)

    @staticmethod
    def backward(ctx, grad_y):  # noqa: ANN001
        rows, weight, scale, batch_psi2 = ctx.saved_tensors
        nu = ctx.nu
        grad_rows = torch.mul(grad_y, weight * scale).addcmul_(rows, nu * scale * scale, value=-1)
        grad_times_rows = (grad_y * rows).sum(0)
        if ctx.update_nu:
            count = ctx.reduce(grad_y.new_tensor([float(grad_y.shape[0])]))
            gamma = scale * scale * batch_psi2
            lam = ctx.reduce(grad_times_rows) * scale * weight / count
            nu.mul_(1 - (1 - ctx.alpha_bwd) * gamma).add_((1 - ctx.alpha_bwd) * lam)
        return grad_rows, grad_times_rows * scale, grad_y.sum(0), None, None, None, None, None, None


class PowerNorm(_BatchStatNorm):
    """PowerNorm (Shen et al. 2020): quadratic-mean normalization with running statistics in the forward pass.

    Training normalizes with the running quadratic mean of earlier batches, ``X / sqrt(psi^2 + eps)``
    (``psi^2`` starts at 1), then updates ``psi^2 <- alpha_fwd * psi^2 + (1 - alpha_fwd) * mean(X^2)``
    over real tokens; the backward is the paper's approximation (``_PowerNormFunction``). The first
    ``warmup_steps`` training steps normalize with the batch's own quadratic mean. No centring.
    ``running_var`` holds ``psi^2``; ``running_mean`` stays 0.
    """

    option = "power"

    def __init__(
        self,
        num_features: int,
        alpha_fwd: float = 0.9,
        alpha_bwd: float = 0.9,
        warmup_steps: int = 0,
        eps: float = 1e-5,
        affine: bool = True,
        small_batch: str | None = None,
        sync: bool = False,
    ) -> None:
        super().__init__(num_features, eps, 1.0 - alpha_fwd, affine, small_batch, sync)
        self.alpha_bwd, self.warmup_steps = alpha_bwd, warmup_steps
        self.register_buffer("grad_ema", torch.zeros(num_features))  # nu in the paper

    def _power_rows(self, rows: Tensor) -> Tensor:
        weight = self.weight if self.weight is not None else rows.new_ones(self.num_features)
        bias = self.bias if self.bias is not None else rows.new_zeros(self.num_features)
        if not self._use_batch_stats(rows):
            return torch.addcmul(bias, rows, torch.rsqrt(self.running_var + self.eps) * weight)
        # mean(X^2) = var + mean^2: over all processes under sync (_moments), else from the native kernel's one pass
        if self.sync:
            mean, var, _ = self._moments(rows.detach())
        else:
            mean, var = self._one_pass_moments(rows)
        # in the buffer's dtype (float32) whatever the activations' (bf16 under autocast)
        batch_psi2 = torch.addcmul(var, mean, mean).to(self.running_var.dtype)
        warming_up = self.schedule_step() < self.warmup_steps
        psi2 = batch_psi2 if warming_up else self.running_var.clone()
        self._record(None, batch_psi2, None, self.running_var)
        if self.update_running:
            with torch.no_grad():
                self.running_var.lerp_(batch_psi2, self.momentum)
                self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(psi2 + self.eps)
        return _PowerNormFunction.apply(
            rows, weight, bias, scale, batch_psi2, self.grad_ema, self.alpha_bwd, self.update_running, self._reduce
        )

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return self._masked_rows(x, mask, self._power_rows)


class BatchRenorm(_BatchStatNorm):
    """Batch Renormalization (Ioffe 2017), masked: batch statistics corrected towards the running ones.

    ``x_hat = (x - mu_B) / sigma_B * r + d`` with ``r = clip(sigma_B / sigma, 1/r_max, r_max)`` and
    ``d = clip((mu_B - mu) / sigma, -d_max, d_max)``, both treated as constants in the backward.
    As in the paper, ``r_max = 1, d_max = 0`` (plain batch norm) for the first ``warmup_steps`` steps,
    then relaxed linearly to ``r_max`` over ``r_max_steps`` and to ``d_max`` over ``d_max_steps``.
    Running statistics are the moving averages of mean and (unbiased) variance, as in batch norm.
    """

    option = "batch_renorm"

    def __init__(
        self,
        num_features: int,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 100,
        r_max_steps: int = 400,
        d_max_steps: int = 250,
        **common: Any,
    ) -> None:
        super().__init__(num_features, **common)
        if r_max < 1 or d_max < 0:
            raise ConfigError(f"norm.r_max={r_max}, norm.d_max={d_max} out of range; accepted: r_max >= 1, d_max >= 0")
        self.r_max, self.d_max = r_max, d_max
        self.warmup_steps, self.r_max_steps, self.d_max_steps = warmup_steps, r_max_steps, d_max_steps

    def clip_limits(self, step: int) -> tuple[float, float]:
        """``(r_max, d_max)`` in force at training step ``step`` (the relaxation schedule)."""

        def progress(steps: int) -> float:
            return min(1.0, max(0.0, (step - self.warmup_steps) / max(1, steps)))

        return 1.0 + (self.r_max - 1.0) * progress(self.r_max_steps), self.d_max * progress(self.d_max_steps)

    def _corrections(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        """``(r, d)``: the batch's statistics against the running ones, clipped; constants of the backward."""
        r_max, d_max = self.clip_limits(self.schedule_step())
        running_std = torch.sqrt(self.running_var + self.eps)
        r = (torch.sqrt(var.detach() + self.eps) / running_std).clamp(1.0 / r_max, r_max)
        d = ((mean.detach() - self.running_mean) / running_std).clamp(-d_max, d_max)
        return r, d

    def _renorm_rows(self, rows: Tensor) -> Tensor:
        if not self.sync:
            return self._renorm_native(rows)
        moments = self._batch_moments(rows)
        if moments is None:
            return self._with_running_stats(rows)
        mean, var, count = moments
        r, d = self._corrections(mean, var)
        self._record(mean, var, self.running_mean, self.running_var)
        normalized = (rows - mean) * torch.rsqrt(var + self.eps) * r + d
        self._update_running(mean, var, count)
        return self._affine(normalized)

    def _renorm_native(self, rows: Tensor) -> Tensor:
        """``nn.BatchNorm1d``'s kernel with the corrections folded into its affine map: with ``r`` and ``d``
        constants, ``(x_hat * r + d) * gamma + beta`` is batch norm with weight ``gamma * r`` and bias
        ``beta + gamma * d``. The statistics for ``r`` and ``d`` come from the kernel's own one-pass reduction."""
        if not self._use_batch_stats(rows):
            return self._with_running_stats(rows)
        mean, var = self._one_pass_moments(rows)
        r, d = self._corrections(mean, var)
        self._record(mean, var, self.running_mean, self.running_var)
        weight = r if self.weight is None else self.weight * r
        bias = d if self.weight is None else torch.addcmul(self.bias, self.weight, d)
        return self._native_batch_norm(rows, weight, bias)

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        return self._masked_rows(x, mask, self._renorm_rows)


class FluctuationMeter:
    """Accumulates the distance of batch statistics from running ones (PowerNorm §3), per norm layer.

    Two pairs, RMS over channels so layers of different width compare:
    - ``mean_dist``, ``var_dist``: batch minus running mean and variance, in the activations' units, as PowerNorm
      plots them; they grow with the activations' scale, which differs by model and learning rate.
    - ``mean_shift``, ``scale_shift``: what the difference does to the layer's output, scale-free. Normalizing
      with the batch's statistics instead of the running ones shifts each output by
      ``(mean_b - mean_r) / sqrt(var_r + eps)`` and scales it by ``sqrt((var_r + eps) / (var_b + eps))``;
      ``scale_shift`` is the log of that factor (0.1: outputs about 10% off).
    The mean terms are absent for norms without centring (PowerNorm).
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.calls = 0

    def _add(self, name: str, per_channel: Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(per_channel.pow(2).mean(-1).sqrt().sum())

    @torch.no_grad()
    def add(
        self, mean: Tensor | None, var: Tensor, running_mean: Tensor | None, running_var: Tensor, eps: float
    ) -> None:
        var, running_var = var.float(), running_var.float()
        if mean is not None and running_mean is not None:
            self._add("mean_dist", mean.float() - running_mean.float())
            self._add("mean_shift", (mean.float() - running_mean.float()) * torch.rsqrt(running_var + eps))
        self._add("var_dist", var - running_var)
        self._add("scale_shift", 0.5 * torch.log((running_var + eps) / (var + eps)))
        self.calls += var.shape[0] if var.dim() == 2 else 1  # [k, C]: k steps' statistics, each one record

    def result(self) -> dict[str, float]:
        return {name: total / self.calls for name, total in self.sums.items()} if self.calls else {}


def batch_stat_norms(model: nn.Module) -> list[tuple[str, _BatchStatNorm]]:
    """The batch-statistic norm layers of a model, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchStatNorm)]


def network_norm_kind(model: nn.Module) -> str:
    """What the network's norms compute statistics over, in normbench.norm_kinds' words (``batch``, ``token`` or
    ``none``): results.json ``norm_kind``, which the report reads instead of importing the classes. The input
    projection's batch norm (``norm=input_batch``) is the input's, not the network's."""
    norms = [m for name, m in model.named_modules() if isinstance(m, SequenceNorm) and "input_proj" not in name]
    if any(norm.uses_batch_stats for norm in norms):
        return BATCH
    return TOKEN if any(not isinstance(norm, NoNorm) for norm in norms) else NONE


def set_training_step(model: nn.Module, step: int) -> None:
    """Tell every batch-statistic norm the optimizer step (drives the PowerNorm / Batch Renorm schedules)."""
    for _, norm in batch_stat_norms(model):
        norm.training_step = step


#: every built-in norm by its option (``norm=<option>``, conf/norm/<option>.yaml)
NORMS: dict[str, type[SequenceNorm]] = {
    cls.option: cls
    for cls in (
        NoNorm,
        BatchNorm,
        MaskedBatchNorm,
        StepBatchNorm,
        PowerNorm,
        BatchRenorm,
        LayerNorm,
        RMSNorm,
        GroupNorm,
        ScaleNorm,
    )
}
