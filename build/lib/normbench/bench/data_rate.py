"""4. Data pipeline: batches per second the datamodule's training loader delivers, against the batches per
second the default model consumes; with ``num_workers=0`` loading runs in the training process, between
steps, so its share of each step is reported too."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from normbench.bench.plain_loop import PlainLoop
from normbench.bench.setup import compose_config, fixed_batches
from normbench.bench.timing import interleave, median, now, paired_ratio, sync
from normbench.run.train import build_datamodule


def loader_seconds(datamodule, batches: int) -> float:
    """Seconds per batch of a fresh training loader (sampler, dataset and collate), first ``batches``."""
    start = now()
    count = sum(1 for _ in itertools.islice(datamodule.train_dataloader(), batches))
    return (now() - start) / count


def measure_data(name: str, overrides: list[str], device: torch.device, batches: int, rounds: int) -> dict[str, Any]:
    cfg = compose_config([*overrides, f"data={name}"])
    datamodule = build_datamodule(cfg)
    prepared = fixed_batches(datamodule, batches, device)
    loop = PlainLoop(cfg, datamodule, device, (rounds + 1) * len(prepared))
    for batch in prepared[:2]:  # warm-up: first-step allocations and optimizer state
        loop.step(batch)

    def model_seconds() -> float:
        sync(device)
        start = now()
        for batch in prepared:
            loop.step(batch)
        sync(device)
        return (now() - start) / len(prepared)

    times = interleave({"loader": lambda: loader_seconds(datamodule, batches), "model": model_seconds}, rounds)
    ratio = paired_ratio(times["model"], times["loader"])  # loader batches/s over model batches/s
    return {
        "data": name,
        "batch_size": int(cfg.data.batch_size),
        "num_workers": int(cfg.data.get("num_workers", 0)),
        "loader batches/s": 1.0 / median(times["loader"]),
        "model batches/s": 1.0 / median(times["model"]),
        "loader / model": ratio,
        "loader share of a step %": 100.0 / (1.0 + ratio),
        "target": "> 1 (loader never the bottleneck)",
        "met": "yes" if ratio > 1.0 else "no",
    }


def data_rate(names: list[str], overrides: list[str], device: torch.device, batches: int, rounds: int) -> list[dict]:
    """One row per datamodule config name (``conf/data/<name>.yaml``)."""
    return [measure_data(name, overrides, device, batches, rounds) for name in names]
