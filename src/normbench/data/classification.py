"""A LightningDataModule for ``(text, label)`` classification: fixed split, own tokenizer, padded batches.

Subclasses only say where the examples come from (``load_examples``). Everything that affects what
the model sees (the split, the tokenizer, truncation) is decided here once, deterministically and
independently of the training seed, so runs with different seeds differ only in the model.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import platformdirs
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from normbench.data.collate import pad_collate
from normbench.data.sampling import ResumableRandomSampler
from normbench.data.tokenizer import KINDS, PAD, UNK, load_or_train_tokenizer, texts_fingerprint
from normbench.errors import ConfigError, DataError

Example = tuple[str, int]
Encoded = list[tuple[Tensor, int]]


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache directory: the argument if given, else ``$NORMBENCH_CACHE``, else the user cache dir."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("NORMBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("normbench"))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"data.{name}={value!r} is out of range; accepted: an integer >= 1")
    return value


def _split_fractions(split: Any) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` fractions: three numbers > 0 summing to 1."""
    try:
        fracs = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        fracs = ()
    if len(fracs) != 3 or not all(0 < f < 1 for f in fracs) or not math.isclose(sum(fracs), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"data.split={list(split) if isinstance(split, Sequence) else split!r} is out of range; "
            "accepted: three fractions (train, val, test), each in (0, 1), summing to 1"
        )
    return fracs  # type: ignore[return-value]


def split_examples(
    examples: Sequence[Example], fractions: tuple[float, float, float], seed: int
) -> tuple[list[Example], list[Example], list[Example]]:
    """Shuffle with a private ``random.Random(seed)`` and cut into train/val/test.

    A private generator keeps the split the same whatever the global (training) seed is.
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_train = round(len(order) * fractions[0])
    n_val = round(len(order) * fractions[1])
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return tuple([examples[i] for i in part] for part in parts)  # type: ignore[return-value]


#: prepared splits of this process by everything that determines them, so the jobs of a multirun (which Hydra
#: runs in one process) read, split, fingerprint and encode the data once, not once per job (1-3 s each)
_PREPARED: dict[tuple, tuple[Any, dict[str, list[Example]], dict[str, Encoded], int]] = {}


class TextClassificationDataModule(L.LightningDataModule):
    """Base datamodule; batches are ``(tokens[B, T] long, mask[B, T] bool, target[B] long)``."""

    def __init__(
        self,
        batch_size: int = 64,
        max_len: int = 64,
        vocab_size: int = 8000,
        tokenizer: str = "wordpiece",
        split: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        cache_dir: str | None = None,
        shuffle_seed: int = 0,
        pad_to: int = 0,
    ) -> None:
        super().__init__()
        self.shuffle_seed = shuffle_seed
        self.train_sampler: ResumableRandomSampler | None = None
        self._resume_state: dict[str, int] | None = None
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_len = _positive_int("max_len", max_len)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 3:
            raise ConfigError(f"data.vocab_size={vocab_size!r} is out of range; accepted: an integer >= 3")
        self.vocab_size_requested = vocab_size
        if tokenizer not in KINDS:
            raise ConfigError(f"data.tokenizer={tokenizer!r} is unknown; accepted: {', '.join(KINDS)}")
        self.tokenizer_kind = tokenizer
        self.split = _split_fractions(split)
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ConfigError(f"data.split_seed={split_seed!r} is not an integer")
        self.split_seed = split_seed
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers!r} is out of range; accepted: an integer >= 0")
        self.num_workers = num_workers
        self.drop_last = bool(drop_last)
        if isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 0:
            raise ConfigError(f"data.pad_to={pad_to!r} is out of range; accepted: 0 (the longest in the batch) or more")
        self.pad_to = pad_to
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.tokenizer: Any = None
        self._splits: dict[str, Encoded] | None = None
        self._examples: dict[str, list[Example]] = {}
        self._num_classes: int | None = None

    # --- hooks for subclasses ------------------------------------------------------------------
    def load_examples(self) -> list[Example]:
        """All labelled examples (labels 0..K-1), in a fixed order; called once per ``setup``."""
        raise NotImplementedError

    def source_key(self) -> tuple | None:
        """What identifies the examples ``load_examples`` returns (e.g. a file's path, size and mtime), so a
        later datamodule of this process with the same settings reuses the prepared splits; None: never reused."""
        return None

    # --- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Split, tokenize and encode once; later calls (any stage) are no-ops."""
        if self._splits is not None:
            return
        source = self.source_key()
        key = None if source is None else (type(self).__name__, source, *self._settings_key())
        if key in _PREPARED:
            self.tokenizer, self._examples, self._splits, self._num_classes = _PREPARED[key]
            return
        examples = self.load_examples()
        labels = sorted({label for _, label in examples})
        if not labels or labels[0] < 0:
            raise DataError(f"{type(self).__name__}: labels must be integers >= 0, got {labels[:5]}")
        train, val, test = split_examples(examples, self.split, self.split_seed)
        for name, part in (("train", train), ("val", val), ("test", test)):
            if not part:
                raise DataError(
                    f"{type(self).__name__}: {len(examples)} examples leave the {name} split empty "
                    f"with data.split={list(self.split)}"
                )
        train_texts = [text for text, _ in train]
        self.tokenizer = load_or_train_tokenizer(
            train_texts,
            self.tokenizer_kind,
            self.vocab_size_requested,
            self.cache_dir / "tokenizers",
            texts_fingerprint(train_texts),
        )
        self._num_classes = labels[-1] + 1
        self._examples = {"train": train, "val": val, "test": test}
        self._splits = {name: self._encode(part, self.max_len) for name, part in self._examples.items()}
        if key is not None:
            _PREPARED[key] = (self.tokenizer, self._examples, self._splits, self._num_classes)

    def _settings_key(self) -> tuple:
        """Every setting that changes the prepared splits (not batching, padding or shuffling)."""
        return (
            self.split,
            self.split_seed,
            self.tokenizer_kind,
            self.vocab_size_requested,
            self.max_len,
            str(self.cache_dir),
        )

    def _encode(self, examples: list[Example], max_len: int) -> Encoded:
        """Token ids truncated to ``max_len``; an empty encoding becomes ``[UNK]`` so no row is all padding."""
        unk = self.tokenizer.token_to_id(UNK)
        encodings = self.tokenizer.encode_batch([text for text, _ in examples], add_special_tokens=False)
        out: Encoded = []
        for enc, (_, label) in zip(encodings, examples, strict=True):
            ids = enc.ids[:max_len] or [unk]
            out.append((torch.tensor(ids, dtype=torch.long), int(label)))
        return out

    def evaluation_loader(self, split: str, max_len: int | None = None, batch_size: int | None = None) -> DataLoader:
        """``split`` in order, truncated at another ``max_len`` and/or batched by another ``batch_size`` than
        training used (length extrapolation, inference at batch size one)."""
        self._require()
        data = self._encode(self._examples[split], max_len) if max_len else self._splits[split]
        return self._loader(split, data=data, batch_size=batch_size)

    def _loader(
        self,
        split: str,
        sampler: ResumableRandomSampler | None = None,
        data: Encoded | None = None,
        batch_size: int | None = None,
    ) -> DataLoader:
        return DataLoader(
            data if data is not None else self._require()[split],  # type: ignore[arg-type]
            batch_size=batch_size or self.batch_size,
            sampler=sampler,
            drop_last=self.drop_last and sampler is not None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=partial(pad_collate, pad_id=self.pad_id, pad_to=self.pad_to),
            # a private generator: creating an iterator never draws from the global RNG (dropout's)
            generator=torch.Generator().manual_seed(self.shuffle_seed),
        )

    def train_dataloader(self) -> DataLoader:
        self.train_sampler = ResumableRandomSampler(len(self._require()["train"]), self.shuffle_seed)
        if self._resume_state is not None:
            epoch, batches = self._resume_state["epoch"], self._resume_state["batches_done"]
            self.train_sampler.resume_at(epoch, batches * self.batch_size)
            self._resume_state = None
        return self._loader("train", self.train_sampler)

    def state_dict(self) -> dict[str, int]:
        """Where training stands in the epoch, saved in checkpoints so a resumed run skips what was done."""
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches_done": progress.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_state = dict(state) if state else None

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    # --- what the model and the results need ---------------------------------------------------
    def _require(self) -> dict[str, Encoded]:
        if self._splits is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare_data() and setup() first")
        return self._splits

    @property
    def vocab_size(self) -> int:
        """The trained tokenizer's real size (may be below the requested ``vocab_size`` on small data)."""
        self._require()
        return int(self.tokenizer.get_vocab_size())

    @property
    def pad_id(self) -> int:
        self._require()
        return int(self.tokenizer.token_to_id(PAD))

    @property
    def num_classes(self) -> int:
        self._require()
        assert self._num_classes is not None
        return self._num_classes

    def stats(self) -> dict[str, Any]:
        """Split sizes and encoded lengths (after truncation), for results.json."""
        splits = self._require()
        lengths = [len(ids) for part in splits.values() for ids, _ in part]
        return {
            "num_train": len(splits["train"]),
            "num_val": len(splits["val"]),
            "num_test": len(splits["test"]),
            "mean_len": sum(lengths) / len(lengths),
            "max_len": max(lengths),
            "vocab_size": self.vocab_size,
            "num_classes": self.num_classes,
        }
