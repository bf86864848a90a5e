"""A training-order sampler that makes runs repeatable and resumable mid-epoch.

The order of epoch ``e`` depends on ``(seed, e)`` alone, not on how much of the global RNG the model
used, so every norm of a sweep sees the same batches (paired comparisons), and a run resumed from a
mid-epoch checkpoint can skip exactly the batches the killed run had already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    """Random permutation per epoch from ``(seed, epoch)``; ``resume_at(epoch, skip)`` starts one epoch late."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples, self.seed = num_samples, seed
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (as for ``DistributedSampler``)."""
        self.epoch = epoch

    def resume_at(self, epoch: int, skip: int) -> None:
        """Leave out the first ``skip`` samples of ``epoch`` when that epoch is iterated next."""
        self._resume = (epoch, skip)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
        self._resume = None
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples  # the full epoch: Lightning counts the skipped batches as done
