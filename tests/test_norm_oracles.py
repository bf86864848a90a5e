"""Norms against computations written out by hand (not the ``F.*`` call the layer itself makes), and the
hand-written batch-statistics path (taken whenever the fluctuation meter records or ``norm.sync`` is on)
against ``nn.BatchNorm1d`` in one process: output, gradients, running statistics and the meter's distances."""

import pytest
import torch
from torch import nn

from normbench.norm_factory import norm_factory
from normbench.norms import FluctuationMeter

C = 6
TOL = dict(atol=1e-5, rtol=1e-5)


def _affine(norm: nn.Module, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(C, generator=gen)
    norm.weight.data.copy_(weight)
    bias = None
    if getattr(norm, "bias", None) is not None:
        bias = torch.randn(C, generator=gen)
        norm.bias.data.copy_(bias)
    return weight, bias


def test_layer_norm_by_hand() -> None:
    norm = norm_factory("layer")(C)
    weight, bias = _affine(norm)
    x = torch.randn(3, 5, C, dtype=torch.float64) * 3 + 2
    mean = x.sum(-1, keepdim=True) / C
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / C  # biased, over the channels of each token
    expected = (x - mean) / torch.sqrt(var + 1e-5) * weight.double() + bias.double()
    torch.testing.assert_close(norm(x.float()).double(), expected, **TOL)


def test_rms_norm_by_hand() -> None:
    norm = norm_factory("rms")(C)
    weight, _ = _affine(norm)
    x = torch.randn(3, 5, C, dtype=torch.float64) * 3 + 2
    expected = x / torch.sqrt((x * x).sum(-1, keepdim=True) / C + 1e-6) * weight.double()  # no centring
    torch.testing.assert_close(norm(x.float()).double(), expected, **TOL)


def test_naive_batch_norm_by_hand_in_training_and_eval() -> None:
    """Statistics over every position (padding too), running mean/var as an average with weight 0.1 for
    the batch, the variance unbiased in the running statistics and biased in the normalization."""
    norm = norm_factory("batch")(C).train()
    weight, bias = _affine(norm)
    x = torch.randn(4, 5, C, dtype=torch.float64) * 3 + 2
    rows = x.reshape(-1, C)
    n = rows.shape[0]
    mean = rows.sum(0) / n
    var = ((rows - mean) ** 2).sum(0) / n
    expected = (x - mean) / torch.sqrt(var + 1e-5) * weight.double() + bias.double()
    torch.testing.assert_close(norm(x.float()).double(), expected, **TOL)
    running_mean, running_var = 0.1 * mean, 0.9 * 1.0 + 0.1 * var * n / (n - 1)
    torch.testing.assert_close(norm.running_mean.double(), running_mean, **TOL)
    torch.testing.assert_close(norm.running_var.double(), running_var, **TOL)
    norm.eval()
    expected = (x - running_mean) / torch.sqrt(running_var + 1e-5) * weight.double() + bias.double()
    torch.testing.assert_close(norm(x.float()).double(), expected, **TOL)


def _padded(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 7, C, generator=gen) * 3 + 2
    mask = torch.arange(7)[None] < torch.tensor([7, 3, 5, 2])[:, None]
    return x.masked_fill(~mask[..., None], 9.0), mask


@pytest.mark.parametrize("name", ["batch", "batch_masked"])
@pytest.mark.parametrize("path", ["fluctuation", "sync"])
def test_hand_written_batch_statistics_equal_torch_batch_norm(name: str, path: str) -> None:
    """The path that computes moments itself (not ``F.batch_norm``) is ``nn.BatchNorm1d`` on the rows the norm
    takes its statistics from (every position for ``batch``, the real tokens for ``batch_masked``)."""
    ours = norm_factory(name, sync=path == "sync")(C)
    ref = nn.BatchNorm1d(C, eps=1e-5, momentum=0.1)
    weight, bias = _affine(ours)
    ref.weight.data.copy_(weight), ref.bias.data.copy_(bias)
    meter = FluctuationMeter()
    for step in range(3):
        x, mask = _padded(seed=step)
        rows = mask if name == "batch_masked" else torch.ones_like(mask)
        grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + step))
        ours.fluctuation = meter if path == "fluctuation" else None
        running_before = ours.running_mean.clone(), ours.running_var.clone()
        x_ours, x_ref = x.clone().requires_grad_(True), x[rows].clone().requires_grad_(True)
        out = ours.train()(x_ours, mask)
        (out[rows] * grad_out[rows]).sum().backward()
        out_ref = ref.train()(x_ref)
        (out_ref * grad_out[rows]).sum().backward()

        torch.testing.assert_close(out[rows], out_ref, **TOL)
        torch.testing.assert_close(x_ours.grad[rows], x_ref.grad, **TOL)
        for param in ("weight", "bias"):
            torch.testing.assert_close(getattr(ours, param).grad, getattr(ref, param).grad, **TOL)
            getattr(ours, param).grad, getattr(ref, param).grad = None, None
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
        if name == "batch_masked":
            assert bool((out[~mask] == 0).all())
        if path == "fluctuation":  # RMS over channels of batch minus running (before this batch's update)
            real = x[rows].double()
            mean_b, var_b = real.mean(0), real.var(0, unbiased=False)
            mean_r, var_r = running_before[0].double(), running_before[1].double()
            mean_dist = (mean_b - mean_r).pow(2).mean().sqrt()
            var_dist = (var_b - var_r).pow(2).mean().sqrt()
            # the output's shift and log scale when normalized by the batch's statistics instead of the running ones
            mean_shift = ((mean_b - mean_r) / (var_r + ours.eps).sqrt()).pow(2).mean().sqrt()
            scale_shift = (((var_r + ours.eps) / (var_b + ours.eps)).sqrt().log()).pow(2).mean().sqrt()
            assert meter.calls == 1
            expected = dict(mean_dist=mean_dist, var_dist=var_dist, mean_shift=mean_shift, scale_shift=scale_shift)
            assert meter.result() == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-5)
            meter = FluctuationMeter()
    x, mask = _padded(seed=5)
    rows = mask if name == "batch_masked" else torch.ones_like(mask)
    torch.testing.assert_close(ours.eval()(x, mask)[rows], ref.eval()(x[rows]), **TOL)
