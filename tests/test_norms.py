"""Each norm against PyTorch's own layer, and the masking invariances the experiments rely on."""

import pytest
import torch
from torch import nn

from normbench.errors import BatchStatisticsError, ConfigError
from normbench.norm_factory import norm_factory, recurrent
from normbench.norms import NORMS

C = 6
TOL = dict(atol=1e-5, rtol=1e-5)


def _reference(name: str) -> nn.Module:
    return {
        "layer": nn.LayerNorm(C, eps=1e-5),
        "rms": nn.RMSNorm(C, eps=1e-6),
        "batch": nn.BatchNorm1d(C, eps=1e-5, momentum=0.1),
        "batch_masked": nn.BatchNorm1d(C, eps=1e-5, momentum=0.1),
    }[name]


def _randomize_affine(ours: nn.Module, ref: nn.Module) -> None:
    """Non-trivial weights so the affine part is checked too (same numbers in both layers)."""
    gen = torch.Generator().manual_seed(1)
    for name, param in ref.named_parameters():
        value = torch.randn(param.shape, generator=gen)
        param.data.copy_(value)
        getattr(ours, name).data.copy_(value)


def _run(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, grad_out: torch.Tensor, ours: bool):
    """Output, input gradient and parameter gradients; torch's BatchNorm1d gets the tokens as rows."""
    x = x.clone().requires_grad_(True)
    if ours:
        out = layer(x, mask)
    elif isinstance(layer, nn.BatchNorm1d):
        out = layer(x.reshape(-1, C)).view_as(x)
    else:
        out = layer(x)
    (out * grad_out).sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}


@pytest.mark.parametrize("name", ["layer", "rms", "batch", "batch_masked"])
@pytest.mark.parametrize("training", [True, False])
def test_agrees_with_torch_on_unpadded_input(name: str, training: bool) -> None:
    torch.manual_seed(0)
    ours, ref = norm_factory(name)(C), _reference(name)
    _randomize_affine(ours, ref)
    x = torch.randn(4, 7, C) * 3 + 2
    mask = torch.ones(4, 7, dtype=torch.bool)
    grad_out = torch.randn(4, 7, C)
    for _ in range(3):  # several steps so running statistics are exercised
        ours.train(training), ref.train(training)
        out_o, gx_o, gp_o = _run(ours, x, mask, grad_out, ours=True)
        out_r, gx_r, gp_r = _run(ref, x, None, grad_out, ours=False)
        torch.testing.assert_close(out_o, out_r, **TOL)
        torch.testing.assert_close(gx_o, gx_r, **TOL)
        for pname in gp_r:
            torch.testing.assert_close(gp_o[pname], gp_r[pname], **TOL)
        x = x * 1.1 + 0.3
    for buffer in ("running_mean", "running_var"):
        if hasattr(ref, buffer):
            torch.testing.assert_close(getattr(ours, buffer), getattr(ref, buffer), **TOL)


def _padded_batch(lengths: list[int], total: int, pad_value: float, seed: int = 0):
    """Real tokens drawn from one fixed stream, padding filled with ``pad_value``."""
    gen = torch.Generator().manual_seed(seed)
    real = [torch.randn(n, C, generator=gen) * 2 - 1 for n in lengths]
    x = torch.full((len(lengths), total, C), pad_value)
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    for i, r in enumerate(real):
        x[i, : len(r)] = r
        mask[i, : len(r)] = True
    return x, mask


def test_masked_batch_norm_equals_batch_norm_on_packed_real_tokens() -> None:
    ours, ref = norm_factory("batch_masked")(C), _reference("batch_masked")
    _randomize_affine(ours, ref)
    x, mask = _padded_batch([5, 2, 7, 1], total=9, pad_value=50.0)
    grad_out = torch.randn(x.shape)
    for training in (True, True, False):
        ours.train(training), ref.train(training)
        xo = x.clone().requires_grad_(True)
        out = ours(xo, mask)
        (out * grad_out).sum().backward()
        packed = x[mask].clone().requires_grad_(True)
        out_ref = ref(packed)
        (out_ref * grad_out[mask]).sum().backward()
        torch.testing.assert_close(out[mask], out_ref, **TOL)
        torch.testing.assert_close(xo.grad[mask], packed.grad, **TOL)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TOL)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
        assert torch.all(out[~mask] == 0)
        assert torch.all(xo.grad[~mask] == 0), "padding must get no gradient"
        ours.zero_grad(), ref.zero_grad()


@pytest.mark.parametrize("name", ["batch_masked", "layer", "rms", "none"])
@pytest.mark.parametrize("training", [True, False])
def test_padding_length_and_values_never_reach_real_tokens(name: str, training: bool) -> None:
    results = []
    for total, pad_value in [(6, 0.0), (11, 0.0), (11, -1e4), (20, float("nan"))]:
        norm = norm_factory(name)(C).train(training)
        x, mask = _padded_batch([4, 1, 6], total, pad_value)
        out = norm(x, mask)[mask]
        assert torch.isfinite(out).all()
        state = [norm.running_mean.clone(), norm.running_var.clone()] if norm.uses_batch_stats else []
        results.append([out, *state])
    for result in results[1:]:
        for got, expected in zip(result, results[0], strict=True):
            torch.testing.assert_close(got, expected, **TOL)


def test_naive_batch_norm_does_see_the_padding() -> None:
    """The baseline must differ from the masked one exactly when there is padding."""
    x, mask = _padded_batch([4, 1, 6], total=8, pad_value=0.0)
    naive, masked = norm_factory("batch")(C), norm_factory("batch_masked")(C)
    assert not torch.allclose(naive(x, mask)[mask], masked(x, mask)[mask], atol=1e-3)
    full = torch.ones_like(mask)
    torch.testing.assert_close(naive(x, full), masked(x, full), **TOL)


def test_none_is_identity() -> None:
    x = torch.randn(2, 3, C)
    assert torch.equal(norm_factory("none")(C)(x, None), x)


def test_recurrent_call_shape_two_dimensional() -> None:
    """Recurrent cells call the norm per time step with x[B, C] and mask[B]."""
    x, mask = torch.randn(5, C), torch.tensor([True, True, False, True, False])
    ref = _reference("batch_masked")
    torch.testing.assert_close(norm_factory("batch_masked")(C)(x, mask)[mask], ref(x[mask]), **TOL)


@pytest.mark.parametrize("name", ["batch", "batch_masked"])
def test_one_value_per_channel_is_a_clear_error(name: str) -> None:
    norm = norm_factory(name)(C).train()
    x, mask = _padded_batch([1, 0], total=1, pad_value=0.0)
    x = x[:1] if name == "batch" else x
    mask = mask[:1] if name == "batch" else mask
    with pytest.raises(BatchStatisticsError, match=rf"norm={name} got 1 real value per channel.*norm=layer"):
        norm(x, mask)


def test_synced_count_of_values_is_the_sum_over_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under sync the "fewer than two values" rule counts every process's rows: one row here and one on an
    identical twin process (a fake two-process all-reduce: the sum doubles) is two, so batch statistics are
    used; alone, or beside a process with no rows, the same row is an error. The slow DDP tests run real
    processes, never with one row on a rank."""
    import normbench.distributed as distributed
    import normbench.norms as norms

    def twin_all_reduce(tensor: torch.Tensor) -> None:
        tensor.mul_(2)

    norm = norm_factory("batch", sync=True)(C).train()
    row = torch.randn(1, C)
    with pytest.raises(BatchStatisticsError, match="got 1 real value per channel"):
        norm(row, None)
    monkeypatch.setattr(norms, "distributed_world", lambda: True)
    monkeypatch.setattr(norms.dist, "all_reduce", twin_all_reduce)
    monkeypatch.setattr(distributed, "distributed_world", lambda: True)
    monkeypatch.setattr("torch.distributed.nn.functional.all_reduce", lambda tensor: tensor * 2)
    out = norm(row, None)  # two equal rows overall: mean = the row, variance 0
    torch.testing.assert_close(out, torch.zeros_like(row) + norm.bias, **TOL)
    assert norm.num_batches_tracked.item() == 1
    monkeypatch.setattr(norms.dist, "all_reduce", lambda tensor: None)  # the other process holds no rows
    monkeypatch.setattr("torch.distributed.nn.functional.all_reduce", lambda tensor: tensor + 0)
    with pytest.raises(BatchStatisticsError, match="got 1 real value per channel"):
        norm(row, None)  # still one value per channel over both processes, however many channels


@pytest.mark.parametrize("name", ["batch", "batch_masked", "batch_renorm"])
def test_synced_statistics_cost_two_all_reduces_a_call(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under sync a norm call sums over processes twice, the count with the sums and then the squared deviations
    (a collective is a round trip between processes, on gloo the larger part of a synced step); the count check
    rides on the first. A fake world whose other process is this one's twin: the sums double."""
    import normbench.distributed as distributed
    import normbench.norms as norms

    calls: list[int] = []

    def twin(tensor: torch.Tensor) -> torch.Tensor:
        calls.append(tensor.numel())
        return tensor * 2

    monkeypatch.setattr(norms, "distributed_world", lambda: True)
    monkeypatch.setattr(norms.dist, "all_reduce", lambda tensor: calls.append(-1))  # the plain one: never used
    monkeypatch.setattr(distributed, "distributed_world", lambda: True)
    monkeypatch.setattr("torch.distributed.nn.functional.all_reduce", twin)
    synced, alone = norm_factory(name, sync=True)(C).train(), norm_factory(name)(C).train()
    x, mask = _padded_batch([3, 2], total=3, pad_value=0.5)
    out = synced(x, mask)
    assert calls == [1 + C, C]  # [count | sums], then the squared deviations
    torch.testing.assert_close(out, alone(x, mask), **TOL)  # twice the same rows: the same statistics


def test_recurrent_small_batch_falls_back_to_running_statistics() -> None:
    norm = recurrent(norm_factory("batch_masked"))(C).train()
    norm.running_mean.fill_(1.0)
    x, mask = torch.randn(3, C), torch.tensor([False, True, False])
    out = norm(x, mask)
    expected = (x[1] - 1.0) / torch.sqrt(torch.tensor(1.0 + norm.eps))
    torch.testing.assert_close(out[1], expected, **TOL)
    assert torch.all(norm.running_mean == 1.0) and norm.num_batches_tracked.item() == 0


def test_unknown_norm_names_the_choices() -> None:
    with pytest.raises(ConfigError) as refused:
        norm_factory("btach")(C)
    accepted = "none, batch, batch_masked, batch_step, power, batch_renorm, layer, rms, group, scale"
    assert str(refused.value) == f"unknown norm 'btach'; accepted: {accepted}"  # every norm, nothing after


def test_unknown_option_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"norm=layer: .*momentum.*accepted options: \['eps', 'affine'\]"):
        norm_factory("layer", momentum=0.1)(C)


def test_every_registered_norm_keeps_shape() -> None:
    x, mask = _padded_batch([3, 2], total=4, pad_value=0.0)
    for name in NORMS:
        options = {"groups": 3} if name == "group" else {}
        assert norm_factory(name, **options)(C)(x, mask).shape == x.shape


def test_per_step_batch_norm_past_its_steps_leaves_running_statistics_and_the_meter_alone() -> None:
    """A training call at a step past ``max_steps`` (``beyond=last``) normalizes with its own batch statistics but
    has no running statistics of its own to update or to measure against: buffers, batch count and fluctuation
    record stay as they were."""
    from normbench.norms import FluctuationMeter

    norm = norm_factory("batch_step", max_steps=4, beyond="last")(C).train()
    norm.fluctuation = FluctuationMeter()
    buffers = {name: b.clone() for name, b in norm.named_buffers()}
    x = torch.randn(3, C)
    out = norm(x, torch.ones(3, dtype=torch.bool), step=6)
    torch.testing.assert_close(out, (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + norm.eps), **TOL)
    assert all(torch.equal(b, buffers[name]) for name, b in norm.named_buffers())
    assert norm.fluctuation.result() == {}


def test_batch_moments_of_bf16_rows_are_float32_sums() -> None:
    """Under bf16 autocast the batch norms' own statistics (``_moments``: sync, the fluctuation meter;
    ``_moments_per_step``: batch_step with padding; ``_one_pass_moments``: power and batch_renorm) are float32, as
    the native kernel's sums are: a bf16 mean of values near 100 is off by up to 0.25, which biases the variance by
    several percent."""
    gen = torch.Generator().manual_seed(0)
    rows = (100 + torch.randn(4096, C, generator=gen)).bfloat16()
    exact = rows.double()
    pooled = norm_factory("batch_masked")(C)._moments(rows)
    steps = norm_factory("batch_step")(C)._moments_per_step(rows[:, None], torch.ones(4096, 1), zeroed=True)
    one_pass = norm_factory("batch_renorm")(C)._one_pass_moments(rows)
    for mean, var in ((pooled[0], pooled[1]), (steps[1][0], steps[3][0]), one_pass):
        assert mean.dtype == var.dtype == torch.float32
        torch.testing.assert_close(mean.double(), exact.mean(0), atol=1e-4, rtol=0)
        torch.testing.assert_close(var.double(), exact.var(0, unbiased=False), atol=0, rtol=1e-4)
    assert int(pooled[2]) == int(steps[0]) == 4096
