"""The training step a PyTorch user would write for the project's module, without Lightning: the
reference for the Lightning overhead, and the step whose throughput and memory are measured."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from normbench.errors import ConfigError
from normbench.norms import set_training_step
from normbench.run.train import build_module


def autocast_for(precision: Any, device: torch.device) -> AbstractContextManager:
    """What Lightning's precision plugin does around the forward pass and the loss."""
    text = str(precision) if precision is not None else "32-true"
    if text in ("32-true", "32"):
        return nullcontext()
    if text == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ConfigError(f"bench: trainer.precision={text!r} has no plain-loop twin; accepted: 32-true, bf16-mixed")


class PlainLoop:
    """The project's module, optimizer and schedule (``optimizer_and_schedule``), gradient clipping and
    precision from the trainer config, stepped by hand; ``step`` is one optimizer step."""

    def __init__(self, cfg: DictConfig, datamodule, device: torch.device, total_steps: int) -> None:
        L.seed_everything(cfg.seed, verbose=False)
        self.device = device
        self.module = build_module(cfg, datamodule).to(device).train()
        self.optimizer, self.schedule = self.module.optimizer_and_schedule(total_steps)
        self.clip = cfg.trainer.get("gradient_clip_val")
        self.autocast = autocast_for(cfg.trainer.get("precision"), device)
        self.steps_done = 0

    def step(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        tokens, mask, target = (t.to(self.device, non_blocking=True) for t in batch)
        set_training_step(self.module.encoder, self.steps_done)
        with self.autocast:
            loss = F.cross_entropy(self.module(tokens, mask), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.schedule.step()
        self.steps_done += 1
        return loss
