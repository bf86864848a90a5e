"""data.bucket=true: batches of similar length; the order is still a function of (seed, epoch) and resumable."""

from __future__ import annotations

import random

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from normbench.data.base import padding_share
from normbench.data.sampling import BucketBatchSampler
from normbench.data.synthetic import ParityDataModule

_rng = random.Random(0)
LENGTHS = [_rng.randint(1, 100) for _ in range(1003)]


def test_every_example_once_per_epoch_in_batches_of_similar_length() -> None:
    sampler = BucketBatchSampler(LENGTHS, batch_size=16, seed=3, pool=10)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1003)) and len(batches) == len(sampler) == 63
    assert sum(len(b) < 16 for b in batches) == 1
    random_batches = [list(range(i, min(i + 16, 1003))) for i in range(0, 1003, 16)]
    bucketed, unsorted = padding_share(LENGTHS, batches), padding_share(LENGTHS, random_batches)
    assert bucketed < 0.15 < 0.35 < unsorted  # sorted within pools of 160 examples: a tenth is padding, not 2/5
    first_lengths = [max(LENGTHS[i] for i in b) for b in batches[:10]]
    assert first_lengths != sorted(first_lengths)  # the batch order is shuffled, not short-to-long


def test_order_depends_on_seed_and_epoch_only_and_drop_last_keeps_full_batches() -> None:
    sampler = BucketBatchSampler(LENGTHS, batch_size=16, seed=3, drop_last=True)
    torch.manual_seed(0)
    random.seed(0)
    first = list(sampler)
    torch.manual_seed(1)
    random.seed(1)
    assert list(sampler) == first and all(len(b) == 16 for b in first) and len(first) == len(sampler) == 62
    _set_sampler_epoch(torch.utils.data.DataLoader(range(1003), batch_sampler=sampler), 1)  # what Lightning does
    assert sampler.sampler.epoch == 1 and list(sampler) != first
    assert BucketBatchSampler(LENGTHS, 16, seed=4, drop_last=True).batches(0) != first


def test_resume_skips_the_batches_done_once() -> None:
    sampler = BucketBatchSampler(LENGTHS, batch_size=16, seed=3)
    sampler.sampler.set_epoch(2)
    epoch2 = list(sampler)
    sampler.resume_at(2, 5)
    assert list(sampler) == epoch2[5:]
    assert list(sampler) == epoch2
    sampler.resume_at(1, 5)
    assert list(sampler) == epoch2  # only in the epoch it was saved in


def test_padding_share_counts_the_padding_of_pad_to() -> None:
    """data.pad_to pads every batch to at least that length: the stat is the share of pads the model sees."""
    kwargs = {"num_train": 256, "num_val": 16, "num_test": 16, "min_len": 2, "max_len": 60, "batch_size": 32}
    shares = []
    for pad_to in (0, 128):
        dm = ParityDataModule(pad_to=pad_to, **kwargs)
        dm.setup()
        masks = [mask for _, mask, _ in dm.train_dataloader()]
        seen = 1.0 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
        assert dm.stats()["train_padding_share"] == pytest.approx(seen)
        shares.append(seen)
    assert 0.3 < shares[0] < 0.6 < 0.7 < shares[1]


def test_datamodule_option_and_resume_state() -> None:
    kwargs = {"num_train": 512, "num_val": 16, "num_test": 16, "min_len": 2, "max_len": 60, "batch_size": 32}
    plain, bucketed = ParityDataModule(**kwargs), ParityDataModule(bucket=True, bucket_pool=16, **kwargs)
    for dm in (plain, bucketed):
        dm.setup()
    assert bucketed.stats()["train_padding_share"] < 0.1 < 0.3 < plain.stats()["train_padding_share"]
    loader = bucketed.train_dataloader()
    assert isinstance(loader.batch_sampler, BucketBatchSampler)
    batches = [target.tolist() for _, _, target in loader]
    assert len(batches) == len(loader) == 16
    labels = [label for _, label in bucketed._require()["train"]]
    expected = [[labels[i] for i in b] for b in bucketed.train_batches(0)]
    assert batches == expected  # the loader yields exactly the batches the statistics describe

    bucketed.load_state_dict({"epoch": 0, "batches_done": 6})  # as a checkpoint restores it
    resumed = [target.tolist() for _, _, target in bucketed.train_dataloader()]
    assert resumed == batches[6:]
