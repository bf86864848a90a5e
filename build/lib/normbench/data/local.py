"""Bring your own data: ``data=local data.path=<file>``.

A ``.csv``, ``.tsv`` or ``.jsonl`` file with a text and a label column is a classification task; a
plain-text file (``.txt`` and the like) is a language-modeling corpus, one line per line. Every problem
with the file (a wrong column name, an empty file, unreadable encoding, a single label) is one line
naming the file and the problem.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from normbench.data.base import SequenceDataModule
from normbench.data.classification import Example, TextClassificationDataModule, _split_fractions
from normbench.data.language_modeling import LanguageModelingDataModule
from normbench.data.text_files import read_text, text_lines
from normbench.errors import ConfigError, DataError

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
TEXT_FORMATS = {".txt": "text", ".text": "text", ".raw": "text", ".tokens": "text"}
FORMATS = ("auto", "csv", "tsv", "jsonl", "text")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: header columns a missing-column error lists (a binary file's "header" can be thousands of bytes)
SHOWN_COLUMNS = 20


def _missing_column(path: Path, role: str, name: str, columns: Sequence[str]) -> DataError:
    if any("\x00" in str(column) for column in columns):
        return DataError(
            f"{path}: not a text table (NUL bytes in its first line); accepted: a UTF-8 file with a header row"
        )
    shown = [c if len(c) <= 40 else c[:37] + "..." for c in map(str, columns[:SHOWN_COLUMNS])]
    more = f" and {len(columns) - SHOWN_COLUMNS} more" if len(columns) > SHOWN_COLUMNS else ""
    return DataError(f"{path}: no column {name!r} (data.{role}_column); columns: {', '.join(shown)}{more}")


def read_table(path: Path, fmt: str, text_column: str, label_column: str) -> list[tuple[str, str]]:
    """``(text, label)`` rows of a csv/tsv (with a header row) or jsonl file, labels as strings."""
    content = read_text(path)
    rows: list[tuple[str, str]] = []
    if fmt in ("csv", "tsv"):
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter="," if fmt == "csv" else "\t")
        columns = reader.fieldnames or []
        for role, name in (("text", text_column), ("label", label_column)):
            if name not in columns:
                raise _missing_column(path, role, name, columns)
        for row in reader:
            text, label = row.get(text_column), row.get(label_column)
            if text is None or label is None:
                raise DataError(f"{path}:{reader.line_num}: the row has fewer fields than the header ({len(columns)})")
            rows.append((text, label.strip()))
    else:
        for lineno, line in enumerate(text_lines(content), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
            for role, name in (("text", text_column), ("label", label_column)):
                if name not in record:
                    raise _missing_column(path, role, name, list(record))
            rows.append((str(record[text_column]), str(record[label_column]).strip()))
    if not rows:
        raise DataError(f"{path}: no rows (only a header or blank lines)")
    return rows


def label_ids(labels: Sequence[str], path: Path) -> dict[str, int]:
    """Label names -> ids 0..K-1, in numeric order when every label is an integer, else sorted; K >= 2."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(f"{path}: every row has the label {_shown(names[0])}; classification needs at least 2 labels")
    if all(name.lstrip("+-").isdigit() for name in names):
        names.sort(key=int)
    return {name: i for i, name in enumerate(names)}


class LocalClassificationDataModule(TextClassificationDataModule):
    """Text classification from a local csv/tsv/jsonl file, split by ``data.split`` with ``split_seed``."""

    def __init__(
        self, path: str, fmt: str, text_column: str = "text", label_column: str = "label", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.path, self.fmt = Path(path).expanduser(), fmt
        self.text_column, self.label_column = text_column, label_column
        self.label_names: list[str] = []

    def load_examples(self) -> list[Example]:
        rows = read_table(self.path, self.fmt, self.text_column, self.label_column)
        ids = label_ids([label for _, label in rows], self.path)
        self.label_names = list(ids)
        return [(text, ids[label]) for text, label in rows]

    def stats(self) -> dict[str, Any]:
        return super().stats() | {"labels": self.label_names}


class LocalTextDataModule(LanguageModelingDataModule):
    """Language modeling on a local plain-text file, split into contiguous train/val/test parts by lines."""

    def __init__(self, path: str, split: Sequence[float] = (0.8, 0.1, 0.1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser()
        self.split = _split_fractions(split)

    def load_lines(self) -> dict[str, list[str]]:
        lines = text_lines(read_text(self.path))
        total = sum(len(line) + 1 for line in lines)
        cuts = (round(self.split[0] * total), round((self.split[0] + self.split[1]) * total))
        parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        done = 0
        for line in lines:
            parts[("train", "val", "test")[sum(done >= cut for cut in cuts)]].append(line)
            done += len(line) + 1
        for split, part in parts.items():
            if not any(line.strip() for line in part):
                raise DataError(
                    f"{self.path}: {len(lines)} lines leave the {split} split without text "
                    f"with data.split={list(self.split)}; the file is too short"
                )
        return parts


def local_datamodule(
    path: str | None = None,
    format: str = "auto",  # noqa: A002  (the config key users write)
    text_column: str = "text",
    label_column: str = "label",
    tokenizer: str | None = None,
    vocab_size: int | None = None,
    lowercase: bool | None = None,
    max_len: int = 128,
    seq_len: int = 128,
    train_windows: int | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    **common: Any,
) -> SequenceDataModule:
    """The datamodule for a local file: classification for csv/tsv/jsonl, language modeling for text."""
    if not path:
        raise ConfigError(
            "data=local needs data.path=<file>: a .csv/.tsv/.jsonl file with text and label columns "
            "(classification) or a plain-text file (language modeling)"
        )
    if format not in FORMATS:
        raise ConfigError(f"data.format={format!r} is unknown; accepted: {', '.join(FORMATS)}")
    suffix = Path(path).suffix.lower()
    fmt = format if format != "auto" else TABLE_FORMATS.get(suffix) or TEXT_FORMATS.get(suffix)
    if fmt is None:
        known = ", ".join([*TABLE_FORMATS, *TEXT_FORMATS])
        raise ConfigError(
            f"data.path={path}: cannot tell the format from {suffix or 'no extension'!r} ({known}); set data.format"
        )
    if fmt == "text":
        options = {"tokenizer": tokenizer or "char", "vocab_size": vocab_size or 256, "lowercase": bool(lowercase)}
        return LocalTextDataModule(path, split, seq_len=seq_len, train_windows=train_windows, **options, **common)
    return LocalClassificationDataModule(
        path,
        fmt,
        text_column,
        label_column,
        tokenizer=tokenizer or "wordpiece",
        vocab_size=vocab_size or 8000,
        max_len=max_len,
        split=split,
        split_seed=split_seed,
        **common,
    )
