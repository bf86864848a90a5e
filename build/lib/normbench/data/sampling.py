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

import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler


class ResumableRandomSampler(DistributedSampler):
    """Random permutation per epoch from ``(seed, epoch)``, split over ``num_replicas`` processes;
    ``resume_at(epoch, skip)`` starts one epoch late.

    ``epoch_size`` (< ``num_samples``) makes an epoch the first ``epoch_size`` indices of that permutation,
    so a large corpus (language modeling windows) can be seen in epochs of a chosen size. A
    ``DistributedSampler`` (so Lightning keeps it instead of wrapping it in its own, whatever
    ``use_distributed_sampler`` says); an epoch is cut to a multiple of ``num_replicas`` examples so every
    process takes the same number of steps.
    """

    def __init__(
        self, num_samples: int, seed: int = 0, num_replicas: int = 1, rank: int = 0, epoch_size: int | None = None
    ) -> None:
        super().__init__(
            range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.epoch_size = num_samples if epoch_size is None else min(epoch_size, num_samples)
        self.num_samples = self.epoch_size // self.num_replicas  # this process's share of an epoch
        self.total_size = self.num_samples * self.num_replicas
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, skip: int) -> None:
        """Leave out this process's first ``skip`` samples of ``epoch`` when that epoch is iterated next."""
        self._resume = (epoch, skip)

    def order(self, epoch: int) -> list[int]:
        """The whole epoch's order (every process's examples interleaved)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=generator)[: self.epoch_size].tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)[: self.total_size][self.rank :: self.num_replicas]
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
        self._resume = None
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples  # the full epoch: Lightning counts the skipped batches as done


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, with the same guarantees as ``ResumableRandomSampler``.

    Each epoch takes the ``(seed, epoch)`` permutation of ``ResumableRandomSampler``, sorts it by length
    within pools of ``pool`` batches (a stable sort, so equal lengths stay in random order), cuts the
    pools into batches and shuffles the batch order with a generator of ``(seed, epoch)``: the order is a
    function of ``(seed, epoch)`` alone and ``resume_at(epoch, batches)`` skips the batches already done.
    ``self.sampler`` is the inner permutation, which Lightning tells the epoch (``set_epoch``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, drop_last: bool = False, pool: int = 50):
        self.lengths = list(lengths)
        self.batch_size, self.drop_last, self.pool = batch_size, drop_last, pool
        self.sampler = ResumableRandomSampler(len(self.lengths), seed)
        self._resume: tuple[int, int] | None = None

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch``, in order."""
        order = self.sampler.order(epoch)
        size = self.batch_size * self.pool
        batches: list[list[int]] = []
        for start in range(0, len(order), size):
            pool = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        random.Random(f"bucket-{self.sampler.seed}-{epoch}").shuffle(batches)
        return batches

    def resume_at(self, epoch: int, skip_batches: int) -> None:
        """Leave out the first ``skip_batches`` batches of ``epoch`` when that epoch is iterated next."""
        self._resume = (epoch, skip_batches)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.sampler.epoch
        batches = self.batches(epoch)
        if self._resume is not None and self._resume[0] == epoch:
            batches = batches[self._resume[1] :]
        self._resume = None
        return iter(batches)

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)
