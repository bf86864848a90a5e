"""`sync: true` under DDP: two CPU processes (gloo) each holding half a batch normalize exactly like one
process holding the whole batch — outputs, input gradients, parameter gradients, running statistics."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from normbench.norm_factory import norm_factory
from normbench.norms import FluctuationMeter

C = 8
WORLD = 2
NORMS = ["batch", "batch_masked", "batch_step", "power", "batch_renorm"]
LENGTHS = [5, 2, 6, 3, 1, 4]  # rank r gets sequences r, r + 2, r + 4: different padding on each rank


def _batch(step: int):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(len(LENGTHS), 6, C, generator=gen) * 1.5 + 0.7
    mask = torch.arange(6)[None, :] < torch.tensor(LENGTHS)[:, None]
    grad_out = torch.randn(x.shape, generator=gen)
    return x, mask, grad_out


def _build(name: str, sync: bool, meter: bool = False):
    """``meter``: with a fluctuation meter, which takes batch_masked off the native kernel onto its own sums."""
    torch.manual_seed(0)
    norm = norm_factory(name, sync=sync)(C)
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_(0.5, 1.5)
    if meter:
        norm.fluctuation = FluctuationMeter()
    return norm


#: without sync under DDP: each process on its own half, as one process alone (no collective may reach the sums)
UNSYNCED = {f"{name}, unsynced": (name, False) for name in NORMS} | {
    "batch_masked, unsynced, fluctuation meter": ("batch_masked", True)
}


def _run(norm, rows: slice | list[int]) -> list[dict]:
    """Two training steps on the given sequences of each batch: what each step produced."""
    records = []
    for step in range(2):
        x, mask, grad_out = _batch(step)
        x = x[rows].clone().requires_grad_(True)
        norm.zero_grad()
        out = norm(x, mask[rows])
        (out * grad_out[rows]).sum().backward()
        records.append(
            {
                "out": out.detach(),
                "grad_x": x.grad,
                "grads": {n: p.grad.clone() for n, p in norm.named_parameters()},
                "buffers": {n: b.clone() for n, b in norm.named_buffers()},
            }
        )
    return records


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = list(range(rank, len(LENGTHS), WORLD))
        results = {name: _run(_build(name, sync=True).train(), rows) for name in NORMS}
        results |= {key: _run(_build(name, False, meter).train(), rows) for key, (name, meter) in UNSYNCED.items()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # every rank done before the store goes: a rank still in a collective aborts (SIGABRT)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("name", NORMS)
def test_synced_statistics_equal_single_process_on_the_concatenated_batch(name: str, synced) -> None:
    whole = _run(_build(name, sync=False).train(), slice(None))
    tol = dict(atol=1e-5, rtol=1e-5)
    for step, expected in enumerate(whole):
        for rank, results in enumerate(synced):
            got = results[name][step]
            rows = list(range(rank, len(LENGTHS), WORLD))
            torch.testing.assert_close(got["out"], expected["out"][rows], **tol)
            torch.testing.assert_close(got["grad_x"], expected["grad_x"][rows], **tol)
            for key, value in expected["buffers"].items():
                torch.testing.assert_close(got["buffers"][key], value, **tol, msg=f"{name} step {step} {key}")
        for key, value in expected["grads"].items():  # DDP sums the processes' parameter gradients
            torch.testing.assert_close(sum(r[name][step]["grads"][key] for r in synced), value, **tol)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(UNSYNCED))
def test_unsynced_statistics_under_ddp_are_each_process_own(key: str, synced) -> None:
    name, meter = UNSYNCED[key]
    for rank, results in enumerate(synced):
        alone = _run(_build(name, False, meter).train(), list(range(rank, len(LENGTHS), WORLD)))
        for step, expected in enumerate(alone):
            got = results[key][step]
            torch.testing.assert_close(got["out"], expected["out"], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(got["grad_x"], expected["grad_x"], atol=1e-6, rtol=1e-6)
            for buffer, value in expected["buffers"].items():
                torch.testing.assert_close(got["buffers"][buffer], value, atol=1e-6, rtol=1e-6, msg=f"{key} {buffer}")


def test_unsynced_statistics_differ_across_processes_halves() -> None:
    """The counterpart: without sync, each half's statistics differ from the whole batch's."""
    whole = _run(_build("batch_masked", sync=False).train(), slice(None))
    half = _run(_build("batch_masked", sync=False).train(), [0, 2, 4])
    assert not torch.allclose(half[0]["buffers"]["running_mean"], whole[0]["buffers"]["running_mean"], atol=1e-3)
