"""Distributed equivalence of a norm: ``world`` CPU processes (gloo), each holding its share of a batch,
with ``sync`` on, against one process holding the joined batch, as in ``tests/test_sync.py``.

Two training steps (forward and backward) on sequences of different lengths, so each process has
different padding; compared are the outputs, the input gradients and the running statistics after
each step. Equal up to float rounding when the norm all-reduces its statistics; a norm that keeps
per-process statistics differs by as much as the statistics of half a batch differ from the whole's.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from normbench.norm_factory import norm_factory

CHANNELS = 8
LENGTHS = (5, 2, 6, 3, 1, 4, 6, 2)  # rank r takes sequences r, r + world, ...: different padding per rank
STEPS = 2


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    length = max(LENGTHS)
    x = torch.randn(len(LENGTHS), length, CHANNELS, generator=gen) * 1.5 + 0.7
    mask = torch.arange(length)[None, :] < torch.tensor(LENGTHS)[:, None]
    return x, mask, torch.randn(x.shape, generator=gen)


def _build(norm_cfg: dict[str, Any], sync: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    norm = norm_factory({**norm_cfg, "sync": sync})(CHANNELS)
    with torch.no_grad():
        for param in norm.parameters():
            param.uniform_(0.5, 1.5)
    return norm.train()


def _run(norm: torch.nn.Module, rows: list[int]) -> list[dict[str, torch.Tensor]]:
    """What each training step produced on the given sequences: outputs, input gradients, buffers."""
    records = []
    for step in range(STEPS):
        x, mask, grad_out = _batch(step)
        x = x[rows].clone().requires_grad_(True)
        norm.zero_grad()
        out = norm(x, mask[rows])
        (out * grad_out[rows]).sum().backward()
        buffers = {f"buffer {name}": b.detach().clone().float() for name, b in norm.named_buffers()}
        records.append({"out": out.detach(), "grad_x": x.grad.detach(), **buffers})
    return records


def _rows(rank: int, world: int) -> list[int]:
    return list(range(rank, len(LENGTHS), world))


def _worker(rank: int, norm_cfgs: list[dict[str, Any]], world: int, init_file: str, out_dir: str) -> None:
    # norms.all_reduce_sum uses torch.distributed.nn's differentiable all_reduce, which warns of its deprecation
    warnings.filterwarnings("ignore", message=".*all_reduce is deprecated", category=FutureWarning)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        records = [_run(_build(cfg, sync=True), _rows(rank, world)) for cfg in norm_cfgs]
        torch.save(records, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # every rank done before the store goes: a rank still in a collective aborts (SIGABRT)
    finally:
        dist.destroy_process_group()


def synced_vs_joined(norm_cfgs: list[dict[str, Any]], world: int = 2) -> list[float]:
    """For each norm config: the largest absolute difference between the synced processes and the single
    process on the joined batch, over outputs, input gradients and buffers of every step. One set of
    processes measures every norm (starting them is most of the time)."""
    with tempfile.TemporaryDirectory(prefix="normbench-sync-") as tmp:
        mp.spawn(_worker, args=(norm_cfgs, world, str(Path(tmp) / "init"), tmp), nprocs=world, join=True)
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(world)]
    gaps = []
    for index, cfg in enumerate(norm_cfgs):
        gap = 0.0
        for step, expected in enumerate(_run(_build(cfg, sync=False), list(range(len(LENGTHS))))):
            for rank, records in enumerate(ranks):
                got, rows = records[index][step], _rows(rank, world)
                for key, value in expected.items():
                    want = value if key.startswith("buffer") else value[rows]
                    gap = max(gap, float((got[key].float() - want.float()).abs().max()))
        gaps.append(gap)
    return gaps
