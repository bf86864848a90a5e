"""The norm zoo against references written here in plain tensor ops from each paper's equations."""

import copy

import pytest
import torch
from torch import nn

from normbench.errors import BatchStatisticsError, ConfigError
from normbench.norm_factory import norm_factory
from normbench.norms import BatchRenorm, PowerNorm, StepBatchNorm

C = 8
TOL = dict(atol=1e-5, rtol=1e-5)
BATCH_STAT_NORMS = ["batch_masked", "batch_step", "power", "batch_renorm"]


def _padded(lengths: list[int], total: int, pad_value: float = 0.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.full((len(lengths), total, C), pad_value)
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, C, generator=gen) * 2 + 0.5
        mask[i, :n] = True
    return x, mask


def _with_affine(norm: nn.Module, seed: int = 3) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 1.0)
    return norm


def _forward_backward(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor, grad_out: torch.Tensor, **kw):
    x = x.clone().requires_grad_(True)
    out = norm(x, mask, **kw)
    (out * grad_out).sum().backward()
    return out.detach(), x.grad


# --- group, scale ----------------------------------------------------------------------------------


def test_group_norm_equals_torch_group_norm_per_token() -> None:
    ours, ref = _with_affine(norm_factory("group", groups=4)(C)), nn.GroupNorm(4, C)
    ref.load_state_dict(ours.state_dict())
    x, mask = _padded([5, 3], 5)
    grad_out = torch.randn(x.shape)
    out, gx = _forward_backward(ours, x, mask, grad_out)
    xr = x.clone().reshape(-1, C).requires_grad_(True)
    out_ref = ref(xr)
    (out_ref * grad_out.reshape(-1, C)).sum().backward()
    torch.testing.assert_close(out, out_ref.view_as(x), **TOL)
    torch.testing.assert_close(gx, xr.grad.view_as(x), **TOL)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TOL)


def test_group_norm_rejects_groups_that_do_not_divide_channels() -> None:
    with pytest.raises(ConfigError, match=r"norm.groups=3 must divide the 8 channels"):
        norm_factory("group", groups=3)(C)


def test_scale_norm_is_g_times_x_over_its_norm() -> None:
    norm = norm_factory("scale")(C)
    x = torch.randn(3, 4, C)
    assert norm.scale.item() == pytest.approx(C**0.5)
    expected = C**0.5 * x / torch.sqrt((x * x).sum(-1, keepdim=True))
    torch.testing.assert_close(norm(x, None), expected, **TOL)


# --- batch_step (Cooijmans et al. 2016) ------------------------------------------------------------


def _step_calls(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, grad_out: torch.Tensor):
    """``norm`` called once per step (a recurrent cell's way), stacked: output and input gradient."""
    x = x.clone().requires_grad_(True)
    out = torch.stack([norm(x[:, t], None if mask is None else mask[:, t], step=t) for t in range(x.shape[1])], 1)
    (out * grad_out).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize(
    ("lengths", "per_step"),
    [([6, 4, 6, 2], False), ([6, 4, 6, 2], True), ([6, 6, 6, 6], False), ([6, 6, 6, 6], True)],
    ids=["padded", "padded-per-step", "no-padding", "no-padding-per-step"],
)
def test_step_batch_norm_is_one_batch_norm1d_per_step_on_the_real_sequences(lengths, per_step) -> None:
    """Without padding (and per-step calls without a mask) the native kernel on ``[B, T * C]`` does the work: the
    same outputs, gradients (the parameters' summed over steps), running statistics and batch count."""
    total = 6
    ours = _with_affine(StepBatchNorm(C, max_steps=total + 2))
    refs = [nn.BatchNorm1d(C) for _ in range(total)]
    for ref in refs:
        ref.weight.data.copy_(ours.weight.data)
        ref.bias.data.copy_(ours.bias.data)
    x, mask = _padded(lengths, total, pad_value=9.0)
    grad_out = torch.randn(x.shape)
    for training in (True, True, False):
        ours.train(training)
        ours.zero_grad()
        call_mask = None if per_step and mask.all() else mask
        out, gx = (_step_calls if per_step else _forward_backward)(ours, x, call_mask, grad_out)
        for t, ref in enumerate(refs):
            ref.train(training)
            ref.zero_grad()
            real = mask[:, t]
            xt = x[real, t].clone().requires_grad_(True)
            out_t = ref(xt)
            (out_t * grad_out[real, t]).sum().backward()
            torch.testing.assert_close(out[real, t], out_t, **TOL)
            torch.testing.assert_close(gx[real, t], xt.grad, **TOL)
            torch.testing.assert_close(ours.running_mean[t], ref.running_mean, **TOL)
            torch.testing.assert_close(ours.running_var[t], ref.running_var, **TOL)
        torch.testing.assert_close(ours.weight.grad, sum(ref.weight.grad for ref in refs), **TOL)
        torch.testing.assert_close(ours.bias.grad, sum(ref.bias.grad for ref in refs), **TOL)
        assert torch.all(out[~mask] == 0) and torch.all(gx[~mask] == 0)
    assert torch.all(ours.running_mean[total:] == 0) and torch.all(ours.running_var[total:] == 1)
    assert int(ours.num_batches_tracked) == (2 * total if per_step else 2)


def test_step_batch_norm_called_per_step_equals_called_on_the_sequence() -> None:
    x, mask = _padded([5, 3, 5], 5)
    whole, stepwise = StepBatchNorm(C, max_steps=8), StepBatchNorm(C, max_steps=8)
    out_whole = whole(x, mask)
    out_steps = torch.stack([stepwise(x[:, t], mask[:, t], step=t) for t in range(5)], dim=1)
    torch.testing.assert_close(out_steps, out_whole, **TOL)
    torch.testing.assert_close(stepwise.running_var, whole.running_var, **TOL)


def test_step_batch_norm_at_a_step_with_one_real_value_uses_and_keeps_its_running_statistics() -> None:
    """Training, lengths [3, 1]: steps 1-2 have one real sequence, no batch statistics; they are normalized with
    their own running statistics, by hand, and those stay as they were (step 0 moves)."""
    norm = StepBatchNorm(C, max_steps=3, small_batch="running").train()
    with torch.no_grad():
        norm.running_mean.copy_(torch.arange(3.0)[:, None] + torch.linspace(0, 1, C))
        norm.running_var.copy_(torch.arange(1.0, 4.0)[:, None].expand(3, C))
    before_mean, before_var = norm.running_mean.clone(), norm.running_var.clone()
    x, mask = _padded([3, 1], 3)
    out = norm(x, mask)
    for t in (1, 2):
        expected = (x[0, t] - before_mean[t]) / torch.sqrt(before_var[t] + norm.eps)
        torch.testing.assert_close(out[0, t], expected, **TOL)
    torch.testing.assert_close(norm.running_mean[1:], before_mean[1:], atol=0, rtol=0)
    torch.testing.assert_close(norm.running_var[1:], before_var[1:], atol=0, rtol=0)
    assert not torch.equal(norm.running_mean[0], before_mean[0])


def test_step_batch_norm_beyond_max_steps_reuses_the_last_steps_statistics_or_refuses() -> None:
    norm = StepBatchNorm(C, max_steps=3)
    norm.running_mean.copy_(torch.arange(3.0)[:, None].expand(3, C))
    norm.eval()
    x, mask = torch.zeros(2, 6, C), torch.ones(2, 6, dtype=torch.bool)
    out = norm(x, mask)  # x = 0: the output is -running_mean / sqrt(1 + eps) of the step used
    used_mean = -out[0, :, 0] * torch.sqrt(torch.tensor(1 + norm.eps))
    torch.testing.assert_close(used_mean, torch.tensor([0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), **TOL)
    strict = StepBatchNorm(C, max_steps=3, beyond="error").eval()
    with pytest.raises(BatchStatisticsError, match=r"statistics for 3 steps, got step 5.*norm.beyond=last"):
        strict(x, mask)


def test_step_batch_norm_gamma_init_of_the_paper() -> None:
    norm = norm_factory("batch_step", gamma_init=0.1)(C)
    assert torch.all(norm.weight == 0.1)


# --- PowerNorm (Shen et al. 2020, Algorithm 1) -----------------------------------------------------


def _power_reference(steps, weight, bias, alpha_fwd=0.9, alpha_bwd=0.9, eps=1e-5):
    """Algorithm 1 written out: forward with psi_{t-1}, backward with the nu-corrected gradient."""
    psi2, nu = torch.ones(C), torch.zeros(C)
    results = []
    for rows, grad_y in steps:
        scale = 1 / torch.sqrt(psi2 + eps)
        x_hat = rows * scale
        y = weight * x_hat + bias
        psi2 = alpha_fwd * psi2 + (1 - alpha_fwd) * (rows * rows).mean(0)
        g = weight * grad_y
        grad_x = (g - nu * x_hat) * scale
        gamma, lam = (x_hat * x_hat).mean(0), (x_hat * g).mean(0)
        nu = nu * (1 - (1 - alpha_bwd) * gamma) + (1 - alpha_bwd) * lam
        results.append((y, grad_x, (grad_y * x_hat).sum(0), psi2.clone(), nu.clone()))
    return results


def test_power_norm_matches_algorithm_1_on_the_real_tokens() -> None:
    norm = _with_affine(PowerNorm(C))
    weight, bias = norm.weight.detach().clone(), norm.bias.detach().clone()
    batches = [_padded([4, 2, 5], 6, pad_value=7.0, seed=s) for s in range(3)]
    grads = [torch.randn(b[0].shape, generator=torch.Generator().manual_seed(10 + i)) for i, b in enumerate(batches)]
    expected = _power_reference([(x[m], g[m]) for (x, m), g in zip(batches, grads, strict=True)], weight, bias)
    for (x, mask), grad_out, (y, grad_x, grad_w, psi2, nu) in zip(batches, grads, expected, strict=True):
        norm.zero_grad()
        out, gx = _forward_backward(norm, x, mask, grad_out)
        torch.testing.assert_close(out[mask], y, **TOL)
        torch.testing.assert_close(gx[mask], grad_x, **TOL)
        torch.testing.assert_close(norm.weight.grad, grad_w, **TOL)
        torch.testing.assert_close(norm.bias.grad, grad_out[mask].sum(0), **TOL)
        torch.testing.assert_close(norm.running_var, psi2, **TOL)
        torch.testing.assert_close(norm.grad_ema, nu, **TOL)
    norm.eval()
    x, mask = batches[0]
    torch.testing.assert_close(norm(x, mask)[mask], weight * x[mask] / torch.sqrt(psi2 + 1e-5) + bias, **TOL)


def test_power_norm_warmup_uses_the_batch_quadratic_mean() -> None:
    norm = PowerNorm(C, affine=False, warmup_steps=1)
    x, mask = _padded([4, 3], 4)
    rows = x[mask]
    torch.testing.assert_close(norm(x, mask)[mask], rows / torch.sqrt((rows * rows).mean(0) + 1e-5), **TOL)


# --- Batch Renormalization (Ioffe 2017) ------------------------------------------------------------


def test_batch_renorm_matches_the_paper_with_r_and_d_as_constants() -> None:
    norm = _with_affine(BatchRenorm(C, r_max=1.5, d_max=0.5, warmup_steps=0, r_max_steps=1, d_max_steps=1))
    running_mean, running_var = torch.zeros(C), torch.ones(C)
    for step, seed in enumerate(range(3)):
        x, mask = _padded([4, 6, 3], 6, pad_value=-3.0, seed=seed)
        grad_out = torch.randn(x.shape)
        rows = x[mask].clone().requires_grad_(True)
        r_max, d_max = (1.0, 0.0) if step == 0 else (1.5, 0.5)
        assert norm.clip_limits(step) == (r_max, d_max)
        mean, var = rows.mean(0), rows.var(0, unbiased=False)
        std, running_std = torch.sqrt(var + 1e-5), torch.sqrt(running_var + 1e-5)
        r = (std.detach() / running_std).clamp(1 / r_max, r_max)
        d = ((mean.detach() - running_mean) / running_std).clamp(-d_max, d_max)
        weight, bias = (p.detach().clone().requires_grad_(True) for p in (norm.weight, norm.bias))
        expected = weight * ((rows - mean) / std * r + d) + bias
        (expected * grad_out[mask]).sum().backward()
        n = rows.shape[0]
        running_mean = 0.9 * running_mean + 0.1 * mean.detach()
        running_var = 0.9 * running_var + 0.1 * var.detach() * n / (n - 1)

        norm.zero_grad()
        out, gx = _forward_backward(norm, x, mask, grad_out)
        torch.testing.assert_close(out[mask], expected.detach(), **TOL)
        torch.testing.assert_close(gx[mask], rows.grad, **TOL)
        torch.testing.assert_close(norm.weight.grad, weight.grad, **TOL)
        torch.testing.assert_close(norm.bias.grad, bias.grad, **TOL)
        torch.testing.assert_close(norm.running_mean, running_mean, **TOL)
        torch.testing.assert_close(norm.running_var, running_var, **TOL)


def test_batch_renorm_relaxation_schedule() -> None:
    norm = BatchRenorm(C, r_max=3.0, d_max=5.0, warmup_steps=100, r_max_steps=400, d_max_steps=250)
    assert norm.clip_limits(0) == (1.0, 0.0) and norm.clip_limits(100) == (1.0, 0.0)
    assert norm.clip_limits(300) == pytest.approx((2.0, 4.0))
    assert norm.clip_limits(10_000) == (3.0, 5.0)
    defaults = BatchRenorm(C)  # the same schedule is the default: fully relaxed exactly at step 100 + 400
    assert defaults.clip_limits(350) == (2.25, 5.0) and defaults.clip_limits(500) == (3.0, 5.0)


@pytest.mark.parametrize("momentum", [0.0, 1.5])
def test_a_momentum_outside_0_1_is_refused_in_one_line(momentum: float) -> None:
    with pytest.raises(ConfigError) as err:
        BatchRenorm(C, momentum=momentum)
    assert str(err.value) == f"norm.momentum={momentum} is out of range; accepted: 0 < momentum <= 1"


# --- what every batch-statistic norm must do -------------------------------------------------------


@pytest.mark.parametrize("name", BATCH_STAT_NORMS)
def test_fewer_than_two_values_per_channel_is_a_clear_error(name: str) -> None:
    norm = norm_factory(name)(C).train()
    x, mask = _padded([1, 0], 1)
    with pytest.raises(BatchStatisticsError, match=rf"norm={name} got 1 real value per channel"):
        norm(x, mask)


@pytest.mark.parametrize("name", BATCH_STAT_NORMS)
def test_running_statistics_never_see_padding_and_no_nan_on_an_all_padding_row(name: str) -> None:
    outputs = []
    for total, pad_value in [(5, 0.0), (9, 1e4), (9, float("nan"))]:
        norm = norm_factory(name)(C).train()
        x, mask = _padded([5, 0, 3, 4], total, pad_value)  # row 1 is all padding
        x = x.requires_grad_(True)
        out = norm(x, mask)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
        assert torch.all(out[1] == 0)
        buffers = [b.clone() for b in norm.buffers()]
        outputs.append([out[mask].detach(), *buffers])
    for other in outputs[1:]:
        for got, expected in zip(other, outputs[0], strict=True):
            torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("name", [*BATCH_STAT_NORMS, "batch"])
def test_frozen_running_statistics_stay_put_in_train_mode(name: str) -> None:
    """What the train/eval-gap instrument relies on: batch statistics without updating running ones."""
    norm = norm_factory(name)(C).train()
    norm.update_running = False
    before = copy.deepcopy(norm.state_dict())
    x, mask = _padded([5, 3], 5)
    norm(x, mask)
    for key, value in norm.state_dict().items():
        torch.testing.assert_close(value, before[key])
