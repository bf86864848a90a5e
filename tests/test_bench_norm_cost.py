"""The norm-cost bench section in process, at tiny sizes: what each extra row times."""

from __future__ import annotations

import math

import torch

from normbench.bench.norm_cost import PackingOnly, norm_config, norm_cost, step_config
from normbench.bench.timing import use_clock
from normbench.norm_factory import norm_factory


def test_packing_only_is_batch_masked_without_the_norm() -> None:
    """The gather and scatter alone: real tokens pass through unchanged, padding comes out 0 with no gradient."""
    x = torch.randn(3, 5, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    packing = PackingOnly(norm_factory("batch_masked")(4))
    assert not list(packing.parameters())
    out = packing(x, mask)
    torch.testing.assert_close(out, x * mask[..., None], atol=0, rtol=0)
    grad = torch.randn_like(x)
    (out * grad).sum().backward()
    torch.testing.assert_close(x.grad, grad * mask[..., None], atol=0, rtol=0)


def test_norm_cost_adds_the_packing_row_the_unpadded_batch_step_row_and_the_masked_ratio() -> None:
    use_clock("wall")
    lengths = torch.tensor([6, 3, 5, 2])
    names = ["batch_masked", "batch_step", "power", "batch_renorm", "layer"]
    rows = {row["norm"]: row for row in norm_cost(names, lengths, 8, [], torch.device("cpu"), rounds=2, block=0.001)}
    assert list(rows) == [*names, "batch_masked: packing only", "batch_step, no padding"]
    for name, row in rows.items():
        assert row["ours us"] > 0 and math.isfinite(row["ratio"]), name
        on_masked = name in ("power", "batch_renorm")
        assert isinstance(row["vs batch_masked"], float) == on_masked, name
    assert rows["batch_step, no padding"]["padding %"] == 0.0 and rows["batch_step"]["padding %"] > 0
    assert rows["batch_masked: packing only"]["target"] == rows["batch_step, no padding"]["target"] == "reported"
    assert rows["batch_step"]["target"] == "<= 2.0" and rows["batch_masked"]["target"] == "<= 1.0"


def test_batch_step_gets_running_statistics_for_every_step_of_the_batch() -> None:
    cfg = norm_config("batch_step", ["data.max_len=4"])
    assert cfg["max_steps"] == 4
    assert step_config(cfg, torch.tensor([9, 2]))["max_steps"] == 9
    assert step_config(cfg, torch.tensor([3, 2]))["max_steps"] == 4
