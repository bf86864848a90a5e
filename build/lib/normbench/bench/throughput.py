"""3. Training throughput per model x norm: real tokens per second and peak memory of the plain training
step (the Lightning overhead is measured on its own), every combination seeing the same batches."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from normbench.bench.plain_loop import PlainLoop
from normbench.bench.setup import compose_config
from normbench.bench.timing import PeakMemory, interleave, median, now, step_seconds, sync


def train_run(
    cfg: DictConfig, datamodule, batches: list, warmup: int, device: torch.device
) -> tuple[float, PeakMemory]:
    """Seconds per step, and the peak memory of building the module and training it on ``batches``."""
    memory = PeakMemory(device)
    stamps: list[float] = []
    with memory.measure():
        loop = PlainLoop(cfg, datamodule, device, len(batches))
        for step, batch in enumerate(batches):
            loop.step(batch)
            if step in (warmup, len(batches) - 1):
                sync(device)
            stamps.append(now())
        del loop
    return step_seconds(stamps, warmup, device), memory


def throughput(
    models: list[str],
    norms: list[str],
    overrides: list[str],
    datamodule,
    batches: list,
    warmup: int,
    rounds: int,
    device: torch.device,
) -> tuple[list[dict[str, Any]], str]:
    """One row per model x norm, the combinations interleaved round by round; returns the rows and the
    memory measurement method."""
    configs = {(m, n): compose_config([*overrides, f"model={m}", f"norm={n}"]) for m in models for n in norms}
    memory: dict[tuple[str, str], list[float]] = {key: [] for key in configs}
    methods: set[str] = set()

    def variant(key: tuple[str, str]):
        def run() -> float:
            seconds, peak = train_run(configs[key], datamodule, batches, warmup, device)
            memory[key].append(peak.mib)
            methods.add(peak.method)
            return seconds

        return run

    times = interleave({f"{m}/{n}": variant((m, n)) for m, n in configs}, rounds)
    real_tokens = sum(int(batch[1].sum()) for batch in batches[warmup:]) / len(batches[warmup:])
    rows = []
    for (model, norm), cfg in configs.items():
        seconds = median(times[f"{model}/{norm}"])
        rows.append(
            {
                "model": model,
                "norm": norm,
                "batch_size": int(cfg.data.batch_size),
                "ms/step": 1e3 * seconds,
                "tokens/s": real_tokens / seconds,
                "peak MiB": median(memory[(model, norm)]),
            }
        )
    return rows, ", ".join(sorted(methods))
