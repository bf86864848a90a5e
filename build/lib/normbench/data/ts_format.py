"""Reader for the ``.ts`` time-series classification format of the UEA/UCR archives (as shipped by sktime).

Why a reader of our own: the format is small and documented (``#`` comments, ``@`` header lines up to
``@data``, then one case per line: channels separated by ``:``, values by ``,``, the class label last,
``?`` for a missing value), and sktime's loader would pull pandas and sktime itself in for it. Every
malformed line is refused with one line naming the file and the line number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from normbench.errors import DataError

MISSING = "?"


@dataclass(frozen=True)
class TsFile:
    """One ``.ts`` file: each case as ``[T, C]`` float32 (NaN where a value is missing) and its label index."""

    problem: str | None
    class_labels: list[str]
    series: list[Tensor]
    labels: list[int]

    @property
    def num_channels(self) -> int:
        return int(self.series[0].shape[1])


def _flag(value: str, where: str, key: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise DataError(f"{where}: @{key} {value!r}; accepted: true, false")
    return value.lower() == "true"


def _channel(text: str, where: str, index: int) -> list[float]:
    values = []
    for item in text.split(","):
        item = item.strip()
        if item == MISSING:
            values.append(math.nan)
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise DataError(f"{where}: channel {index} holds {item!r}; accepted: numbers or ? (missing)") from None
    return values


def read_ts(path: Path) -> TsFile:
    """Parse a classification ``.ts`` file (``@classLabel true ...``; no ``@timeStamps true``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the .ts file ({err})") from None
    header: dict[str, str] = {}
    class_labels: list[str] | None = None
    dimensions: int | None = None
    series: list[Tensor] = []
    labels: list[int] = []
    in_data = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(f"{where}: expected an @ header line or @data before the cases, got {line[:40]!r}")
            key, _, value = line[1:].partition(" ")
            key, value = key.lower(), value.strip()
            if key == "data":
                if class_labels is None:
                    raise DataError(f"{where}: no @classLabel true <labels> line before @data (a classification file)")
                in_data = True
            elif key == "classlabel":
                flag, *names = value.split()
                if not _flag(flag or "", where, "classLabel") or not names:
                    raise DataError(f"{where}: @classLabel {value!r}; accepted: true followed by the class labels")
                class_labels = names
            elif key == "timestamps" and _flag(value, where, "timeStamps"):
                raise DataError(f"{where}: @timeStamps true is not supported; accepted: files without time stamps")
            elif key == "dimensions":
                try:
                    dimensions = int(value)
                except ValueError:
                    raise DataError(f"{where}: @dimensions {value!r}; accepted: an integer") from None
            header[key] = value
            continue
        *channels, label = line.split(":")
        assert class_labels is not None
        if not channels:
            raise DataError(f"{where}: a case needs channels and a label separated by ':', got {line[:40]!r}")
        expected = dimensions or (series[0].shape[1] if series else len(channels))
        if len(channels) != expected:
            raise DataError(f"{where}: {len(channels)} channels; the file has {expected}")
        if label.strip() not in class_labels:
            raise DataError(f"{where}: label {label.strip()!r}; accepted: {', '.join(class_labels)} (@classLabel)")
        values = [_channel(part, where, i) for i, part in enumerate(channels)]
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise DataError(f"{where}: channels of one case have different lengths {sorted(lengths)}")
        series.append(torch.tensor(values, dtype=torch.float32).T.contiguous())
        labels.append(class_labels.index(label.strip()))
    if not in_data:
        raise DataError(f"{path}: no @data line; not a .ts file")
    if not series:
        raise DataError(f"{path}: no cases after @data")
    return TsFile(header.get("problemname"), list(class_labels or []), series, labels)
