"""A training-order sampler that makes runs repeatable, resumable mid-epoch, and the same under DDP.

The order of epoch ``e`` depends on ``(seed, e)`` alone, not on how much of the global RNG the model
used, so every norm of a sweep sees the same batches (paired comparisons), and a run resumed from a
mid-epoch checkpoint can skip exactly the batches the killed run had already trained on.

Under DDP with k processes, process r takes every k-th example of that same order, starting at r: its
batches of b, together, are exactly the batches of k x b one process would take. So a k-device run at
per-device batch b and a 1-device run at batch k x b train on the same global batches, and with synced
statistics (``norm.sync=true``) they compute the same model; only local statistics tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler


class ResumableRandomSampler(DistributedSampler):
    """Random permutation per epoch from ``(seed, epoch)``, split over ``num_replicas`` processes;
    ``resume_at(epoch, skip)`` starts one epoch late.

    A ``DistributedSampler`` (so Lightning keeps it instead of wrapping it in its own, whatever
    ``use_distributed_sampler`` says); an epoch is cut to a multiple of ``num_replicas`` examples so every
    process takes the same number of steps.
    """

    def __init__(self, num_samples: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(
            range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, skip: int) -> None:
        """Leave out this process's first ``skip`` samples of ``epoch`` when that epoch is iterated next."""
        self._resume = (epoch, skip)

    def order(self, epoch: int) -> list[int]:
        """The whole epoch's order (every process's examples interleaved)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)[: self.total_size][self.rank :: self.num_replicas]
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
        self._resume = None
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples  # the full epoch: Lightning counts the skipped batches as done
