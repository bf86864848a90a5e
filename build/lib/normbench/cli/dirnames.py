"""Job dir names that fit the file system: Hydra names a sweep's job dirs after the job's overrides, and a long
override list (a catalogue entry with a few more settings) passes the 255-byte limit of a file name, which
Hydra reports as a stack trace from ``mkdir``. Registered as the config resolver ``short_dirname``
(normbench.cli.resolvers)."""

from __future__ import annotations

import hashlib
import re

#: bytes a job dir name may have (file systems allow 255; Hydra prefixes the job number)
LIMIT = 240
#: a ``key=value`` item of the name with a longer value shows the value as a hash
LONG_VALUE = 24
#: where Hydra's override_dirname separates items: a comma followed by the next ``key=``
ITEM = re.compile(r",(?=[+~]{0,2}[\w./@-]+=)")
#: ``experiment_name`` of a run outside the catalogue (conf/train.yaml)
DEFAULT_EXPERIMENT = "default"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def short_dirname(name: str, limit: int = LIMIT) -> str:
    """``name`` itself when it has at most ``limit`` bytes; else every long value becomes ``#<sha1>`` (so
    every key, the swept ones too, stays readable), and a name still too long keeps its first bytes and
    a hash of the whole. Distinct names stay distinct."""
    if len(name.encode()) <= limit:
        return name
    items = []
    for item in ITEM.split(name):
        key, sep, value = item.partition("=")
        items.append(f"{key}=#{_digest(value)}" if sep and len(value) > LONG_VALUE else item)
    short = ",".join(items)
    if len(short.encode()) <= limit:
        return short
    digest = _digest(name)
    return short.encode()[: limit - len(digest) - 1].decode(errors="ignore") + "-" + digest


def sweep_subdir(experiment_name: str, date: str, time: str) -> str:
    """A sweep's dir under ``multirun/``: ``<date>/<time>`` for plain sweeps, ``<entry>/<date>_<time>`` for a
    catalogue entry's (conf/train.yaml states it once, from ``experiment_name``)."""
    if experiment_name == DEFAULT_EXPERIMENT:
        return f"{date}/{time}"
    return f"{experiment_name}/{date}_{time}"
