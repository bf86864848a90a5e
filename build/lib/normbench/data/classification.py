"""A LightningDataModule for ``(text, label)`` classification: fixed split, own tokenizer, padded batches.

Subclasses only say where the examples come from: ``load_examples`` (one pool, split here by
``data.split``) or ``load_split_examples`` (a corpus's official splits). Everything that affects what
the model sees (the split, the tokenizer, truncation) is decided here once, deterministically and
independently of the training seed, so runs with different seeds differ only in the model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from normbench.data.base import TokenizedDataModule, positive_int, resolve_cache_dir
from normbench.data.tokenizer import UNK, load_or_train_tokenizer, texts_fingerprint, tokenizer_kind
from normbench.errors import ConfigError, DataError

__all__ = ["TextClassificationDataModule", "resolve_cache_dir", "split_examples"]

Example = tuple[str, int]
Encoded = list[tuple[Tensor, int]]


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


def carve_validation(
    train: Sequence[Example], fractions: tuple[float, float, float], seed: int
) -> tuple[list[Example], list[Example]]:
    """Train and validation from an official training split (for corpora that publish no validation
    split): validation keeps the share ``val / (train + val)`` of ``data.split``, chosen with ``seed``."""
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * fractions[1] / (fractions[0] + fractions[1])))
    return [train[i] for i in order[n_val:]], [train[i] for i in order[:n_val]]


#: prepared splits of this process by everything that determines them, so the jobs of a multirun (which Hydra
#: runs in one process) read, split, fingerprint and encode the data once, not once per job (1-3 s each)
_PREPARED: dict[tuple, tuple[Any, dict[str, list[Example]], dict[str, Encoded], int]] = {}


class TextClassificationDataModule(TokenizedDataModule):
    """Base datamodule; batches are ``(tokens[B, T] long, mask[B, T] bool, target[B] long)``."""

    task = "classification"

    def __init__(
        self,
        batch_size: int = 64,
        max_len: int = 64,
        vocab_size: int = 8000,
        tokenizer: str = "wordpiece",
        split: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        **loader: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **loader)
        self.max_len = positive_int("max_len", max_len)
        self.vocab_size_requested = positive_int("vocab_size", vocab_size, minimum=3)
        self.tokenizer_kind = tokenizer_kind(tokenizer)
        self.split = _split_fractions(split)
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ConfigError(f"data.split_seed={split_seed!r} is not an integer")
        self.split_seed = split_seed
        self.tokenizer: Any = None
        self._num_classes: int | None = None
        self._examples: dict[str, list[Example]] = {}

    # --- hooks for subclasses ------------------------------------------------------------------
    def load_examples(self) -> list[Example]:
        """All labelled examples (labels 0..K-1), in a fixed order; called once per ``setup``."""
        raise NotImplementedError

    def load_split_examples(self) -> tuple[list[Example], list[Example], list[Example]]:
        """Train, validation and test examples; by default ``load_examples`` cut by ``data.split``."""
        return split_examples(self.load_examples(), self.split, self.split_seed)

    def source_key(self) -> tuple | None:
        """What identifies the examples ``load_examples`` returns (e.g. a file's path, size and mtime), so a
        later datamodule of this process with the same settings reuses the prepared splits; None: never reused."""
        return None

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

    # --- building the splits -------------------------------------------------------------------
    def build_splits(self) -> dict[str, Encoded]:
        """Split, train the tokenizer on the training split, encode (or reuse what a job before did)."""
        source = self.source_key()
        key = None if source is None else (type(self).__name__, source, *self._settings_key())
        if key in _PREPARED:
            self.tokenizer, self._examples, splits, self._num_classes = _PREPARED[key]
            return splits
        train, val, test = self.load_split_examples()
        labels = sorted({label for part in (train, val, test) for _, label in part})
        if not labels or labels[0] < 0:
            raise DataError(f"{type(self).__name__}: labels must be integers >= 0, got {labels[:5]}")
        for name, part in (("train", train), ("val", val), ("test", test)):
            if not part:
                total = len(train) + len(val) + len(test)
                raise DataError(
                    f"{type(self).__name__}: {total} examples leave the {name} split empty "
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
        splits = {name: self._encode(part, self.max_len) for name, part in self._examples.items()}
        if key is not None:
            _PREPARED[key] = (self.tokenizer, self._examples, splits, self._num_classes)
        return splits

    def evaluation_loader(
        self, split: str, max_len: int | None = None, batch_size: int | None = None, pad_to: int | None = None
    ):
        """``split`` in order, truncated at another ``max_len``, batched by another ``batch_size`` and/or padded
        to another ``pad_to`` than training used (length extrapolation, inference at batch size one, padding)."""
        data = self._encode(self._examples[split], max_len) if max_len else self._require()[split]
        return self._loader(split, data=data, **self.evaluation_batching(batch_size, pad_to))

    def _encode(self, examples: list[Example], max_len: int) -> Encoded:
        """Token ids truncated to ``max_len``; an empty encoding becomes ``[UNK]`` so no row is all padding."""
        unk = self.tokenizer.token_to_id(UNK)
        encodings = self.tokenizer.encode_batch([text for text, _ in examples], add_special_tokens=False)
        out: Encoded = []
        for enc, (_, label) in zip(encodings, examples, strict=True):
            ids = enc.ids[:max_len] or [unk]
            out.append((torch.tensor(ids, dtype=torch.long), int(label)))
        return out

    # --- what the model and the results need ---------------------------------------------------
    @property
    def num_classes(self) -> int:
        self._require()
        assert self._num_classes is not None
        return self._num_classes
