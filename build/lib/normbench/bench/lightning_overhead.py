"""1. Lightning overhead: time per training step of the project's LightningModule under ``lightning.Trainer``
against a hand-written PyTorch loop over the same module, data, optimizer, schedule, clipping and precision."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from normbench.bench.plain_loop import PlainLoop
from normbench.bench.timing import interleave, median, now, paired_ratio, step_seconds, sync
from normbench.run.train import build_module

#: time per step of the Trainer over the plain loop, at most
TARGET = {"cpu": 1.05, "cuda": 1.03}


class StepClock(Callback):
    """End-of-step timestamps; on CUDA the device is synchronised at the first measured and the last step."""

    def __init__(self, device: torch.device, sync_steps: tuple[int, int]) -> None:
        self.device, self.sync_steps, self.stamps = device, sync_steps, []

    def tick(self, step: int) -> None:
        if step in self.sync_steps:
            sync(self.device)
        self.stamps.append(now())

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.tick(trainer.global_step - 1)


def run_trainer(cfg: DictConfig, datamodule, steps: int, warmup: int, device: torch.device, instruments: bool) -> float:
    """Seconds per step of ``Trainer.fit`` with the project's trainer config, minus everything that is not
    training: no logger, progress bar, checkpoints, model summary or validation (``instruments`` adds the
    project's callbacks from ``cfg.callbacks``)."""
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, datamodule)
    clock = StepClock(device, (warmup, steps - 1))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c] if instruments else []
    trainer = instantiate(
        cfg.trainer,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[*callbacks, clock],
    )
    trainer.fit(module, datamodule=datamodule)
    return step_seconds(clock.stamps, warmup, device)


def run_plain_loop(cfg: DictConfig, datamodule, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step of the loop a PyTorch user would write for the same training."""
    loop = PlainLoop(cfg, datamodule, device, steps)
    clock = StepClock(device, (warmup, steps - 1))
    for step, batch in enumerate(datamodule.train_dataloader()):
        if step == steps:
            break
        loop.step(batch)
        clock.tick(step)
    return step_seconds(clock.stamps, warmup, device)


def lightning_overhead(
    cfg: DictConfig, datamodule, device: torch.device, steps: int, warmup: int, rounds: int
) -> list[dict[str, Any]]:
    """Rows: the bare Trainer (the target) and the Trainer with the project's instruments (reported), each
    against the plain loop, all three interleaved round by round."""
    times = interleave(
        {
            "trainer": lambda: run_trainer(cfg, datamodule, steps, warmup, device, instruments=False),
            "instruments": lambda: run_trainer(cfg, datamodule, steps, warmup, device, instruments=True),
            "loop": lambda: run_plain_loop(cfg, datamodule, steps, warmup, device),
        },
        rounds,
    )
    target = TARGET[device.type]
    rows = []
    for key, label, limit in (
        ("trainer", "Trainer (no logger, progress bar, checkpoints)", target),
        ("instruments", "Trainer + instruments (conf/callbacks)", None),
    ):
        ratio = paired_ratio(times[key], times["loop"])
        rows.append(
            {
                "variant": label,
                "batch_size": int(cfg.data.batch_size),
                "precision": str(cfg.trainer.get("precision") or "32-true"),
                "steps x rounds": f"{steps - warmup - 1} x {rounds}",
                "trainer ms/step": 1e3 * median(times[key]),
                "plain loop ms/step": 1e3 * median(times["loop"]),
                "ratio": ratio,
                "target": f"<= {limit}" if limit else "reported",
                "met": ("yes" if ratio <= limit else "no") if limit else "-",
            }
        )
    return rows
