"""What every datamodule shares: loaders over fixed splits, the training order, resume state, statistics.

Every task yields batches ``(tokens[B, T], mask[B, T], target)`` (``target[B]`` for classification,
``target[B, T]`` next tokens for language modeling; numeric tasks: ``features[B, T, F]`` in place of tokens).
Subclasses only build the three splits (``build_splits``) and say how big the vocabulary is; the training
order is a function of ``(shuffle_seed, epoch)`` alone, with or without length bucketing, and resumable mid-epoch.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import platformdirs
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from normbench.data.collate import pad_collate, pad_lm_collate
from normbench.data.sampling import BucketBatchSampler, ResumableRandomSampler
from normbench.data.tokenizer import PAD
from normbench.errors import ConfigError

TASKS = ("classification", "lm")
#: one example: token ids and the target (a label, or the next token at every position)
Item = tuple[Tensor, Any]
Splits = dict[str, Sequence[Item]]


def worker_start_method(num_workers: int) -> str | None:
    """The loader workers' start method: the platform's own (None), except inside a worker of joblib's loky
    launcher (hydra/launcher=joblib), whose default 'loky' pickles the whole loader, which fails; there the
    platform's first method (fork on Linux, spawn on macOS)."""
    if num_workers == 0 or multiprocessing.get_start_method(allow_none=True) in (None, "fork", "spawn", "forkserver"):
        return None
    return multiprocessing.get_all_start_methods()[0]


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache directory: the argument if given, else ``$NORMBENCH_CACHE``, else the user cache dir."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("NORMBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("normbench"))


def positive_int(name: str, value: Any, minimum: int = 1, accepted_too: str = "") -> int:
    """``data.<name>`` as an int >= ``minimum``, else a one-line ``ConfigError`` (naming ``accepted_too`` first)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"{accepted_too} or an integer" if accepted_too else "an integer"
        raise ConfigError(f"data.{name}={value!r} is out of range; accepted: {accepted} >= {minimum}")
    return value


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]], pad_to: int = 0) -> float:
    """Share of the positions of padded ``[B, max(longest, pad_to)]`` batches that are padding."""
    real = total = 0
    for batch in batches:
        batch_lengths = [lengths[i] for i in batch]
        real += sum(batch_lengths)
        total += len(batch_lengths) * max(*batch_lengths, pad_to)
    return 1.0 - real / total if total else 0.0


class SequenceDataModule(L.LightningDataModule):
    """Base datamodule: fixed splits in memory, padded batches, a seeded resumable training order.

    ``bucket=true`` batches sequences of similar length (sorted within pools of ``bucket_pool`` batches,
    batch order shuffled): less padding, but batches that are no longer i.i.d. samples of the data.
    The loader arguments are this class's alone; subclasses pass them on as ``**loader``.
    ``eval_batch_size`` batches Lightning's validation and test loops (None: ``batch_size``). In eval mode a
    sequence's outputs do not depend on its batch mates, so a batch-4 run can validate at 64, several times
    faster; what measures batch statistics (the train/eval gap) reads ``batch_statistics_loader``, at the
    training batch size.
    """

    #: ``classification`` (target[B]) or ``lm`` (target[B, T]); decides the LightningModule
    task: str = "classification"

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        drop_last: bool = False,
        shuffle_seed: int = 0,
        bucket: bool = False,
        bucket_pool: int = 50,
        cache_dir: str | None = None,
        name: str | None = None,
        pad_to: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = positive_int("batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else positive_int("eval_batch_size", eval_batch_size, accepted_too="null (the training batch size)")
        )
        self.pad_to = positive_int("pad_to", pad_to, minimum=0)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers!r} is out of range; accepted: an integer >= 0")
        self.num_workers = num_workers
        self.drop_last = bool(drop_last)
        self.shuffle_seed = shuffle_seed
        self.bucket = bool(bucket)
        self.bucket_pool = positive_int("bucket_pool", bucket_pool)
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.name = name
        self.train_sampler: ResumableRandomSampler | BucketBatchSampler | None = None
        self._resume_state: dict[str, int] | None = None
        self._splits: Splits | None = None

    # --- hooks for subclasses ------------------------------------------------------------------
    def build_splits(self) -> Splits:
        """The ``train``, ``val`` and ``test`` examples, each ``(ids[T] long, target)``; called once."""
        raise NotImplementedError

    def epoch_size(self) -> int | None:
        """Training examples drawn per epoch (None: all of them)."""
        return None

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def pad_id(self) -> int:
        raise NotImplementedError

    # --- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the splits once; later calls (any stage) are no-ops."""
        if self._splits is None:
            self._splits = self.build_splits()

    def _require(self) -> Splits:
        if self._splits is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare_data() and setup() first")
        return self._splits

    def lengths(self, split: str) -> list[int]:
        """Sequence length of every example of a split (what bucketing sorts by)."""
        return [len(ids) for ids, _ in self._require()[split]]

    def padded_collate(self, pad_to: int):
        """The collate function that pads each batch to its longest sequence or to ``pad_to``, if longer."""
        if self.task == "lm":
            return partial(pad_lm_collate, pad_id=self.pad_id)
        return partial(pad_collate, pad_id=self.pad_id, pad_to=pad_to)

    @property
    def collate_fn(self):
        return self.padded_collate(self.pad_to)

    def evaluation_batching(self, batch_size: int | None, pad_to: int | None) -> dict[str, Any]:
        """The loader arguments of an evaluation at another batch size and/or padded length (None: training's)."""
        collate = self.padded_collate(self.pad_to if pad_to is None else pad_to)
        return {"batch_size": batch_size or self.batch_size, "collate_fn": collate}

    def _loader(self, split: str, data: Sequence[Item] | None = None, **sampling: Any) -> DataLoader:
        return DataLoader(
            data if data is not None else self._require()[split],  # type: ignore[arg-type]
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            multiprocessing_context=worker_start_method(self.num_workers),
            # a private generator: creating an iterator never draws from the global RNG (dropout's)
            generator=torch.Generator().manual_seed(self.shuffle_seed),
            **({"batch_size": self.batch_size, "collate_fn": self.collate_fn} | sampling),
        )

    def _train_sampler(self) -> ResumableRandomSampler | BucketBatchSampler:
        train = self._require()["train"]
        if self.bucket:
            return BucketBatchSampler(
                self.lengths("train"), self.batch_size, self.shuffle_seed, self.drop_last, self.bucket_pool
            )
        # under DDP each process takes its share of every global batch (see normbench.data.sampling)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        return ResumableRandomSampler(len(train), self.shuffle_seed, world, rank, epoch_size=self.epoch_size())

    def train_dataloader(self) -> DataLoader:
        sampler = self.train_sampler = self._train_sampler()
        if self._resume_state is not None:
            epoch, batches = self._resume_state["epoch"], self._resume_state["batches_done"]
            if isinstance(sampler, BucketBatchSampler):
                sampler.resume_at(epoch, batches)
            else:
                sampler.resume_at(epoch, batches * self.batch_size)
            self._resume_state = None
        if isinstance(sampler, BucketBatchSampler):
            return self._loader("train", batch_sampler=sampler, batch_size=1)
        return self._loader("train", sampler=sampler, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", batch_size=self.eval_batch_size)

    def batch_statistics_loader(self, split: str) -> DataLoader:
        """``split`` batched as training is: batch statistics measured on it are those training saw."""
        return self._loader(split)

    def state_dict(self) -> dict[str, int]:
        """Where training stands in the epoch, saved in checkpoints so a resumed run skips what was done."""
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches_done": progress.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_state = dict(state) if state else None

    # --- what the results need -----------------------------------------------------------------
    def train_batches(self, epoch: int = 0) -> list[list[int]]:
        """The training batches of ``epoch`` as example indices, in the order the loader yields them."""
        sampler = self._train_sampler()
        if isinstance(sampler, BucketBatchSampler):
            return sampler.batches(epoch)
        order = sampler.order(epoch)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return batches[:-1] if self.drop_last and len(batches[-1]) < self.batch_size else batches

    def stats(self) -> dict[str, Any]:
        """Split sizes, sequence lengths and the padding share of the first epoch's training batches."""
        splits = self._require()
        lengths = [n for split in splits for n in self.lengths(split)]
        stats = {
            "task": self.task,
            "num_train": len(splits["train"]),
            "num_val": len(splits["val"]),
            "num_test": len(splits["test"]),
            "mean_len": sum(lengths) / len(lengths),
            "max_len": max(lengths),
            "train_padding_share": padding_share(self.lengths("train"), self.train_batches(0), self.pad_to),
            **self.input_stats(),
        }
        if self.task == "classification":
            stats["num_classes"] = self.num_classes
        return stats

    def input_stats(self) -> dict[str, Any]:
        """What the model's input layer is sized by (tokens: the vocabulary)."""
        return {"vocab_size": self.vocab_size}

    @property
    def num_classes(self) -> int:
        """Classification only: labels are ``0..num_classes-1``."""
        raise NotImplementedError


class TokenizedDataModule(SequenceDataModule):
    """Text as token ids of a tokenizer trained on the training split (``self.tokenizer``, set by
    ``build_splits``): the embedding's size and padding id come from it."""

    @property
    def vocab_size(self) -> int:
        """The trained tokenizer's real size (may be below the requested ``vocab_size`` on small data)."""
        self._require()
        return int(self.tokenizer.get_vocab_size())

    @property
    def pad_id(self) -> int:
        self._require()
        return int(self.tokenizer.token_to_id(PAD))
