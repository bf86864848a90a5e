"""An explicit list of jobs for one multirun (``hydra/sweeper=job_list hydra.sweeper.jobs=FILE``).

A catalogue entry's second stage runs each cell (its settings and norm) at the cell's own chosen learning rate for
every later seed. As one multirun over (cell, seed) jobs the launcher's workers take the next job as each one ends;
one multirun per cell left a worker idle while the other ran the longest cell's seeds. Each line of the file is
one cell's overrides, crossed with the sweep of the command line's (Hydra's basic sweeper's product), and a line's
keys replace the same keys of the sweep: ``norm=a,b`` gives way to the line's ``norm=b``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from normbench.errors import ConfigError


def read_lines(path: str | Path | None) -> list[list[str]]:
    """The jobs file's lines as override lists (blank lines skipped); a missing or empty file is a ``ConfigError``."""
    if path is None:
        raise ConfigError("hydra.sweeper.jobs is not set; accepted: a file of one job's overrides per line")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"hydra.sweeper.jobs={path}: no such file; accepted: a file of one job's overrides per line")
    lines = [shlex.split(line) for line in file.read_text().splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"hydra.sweeper.jobs={path}: the file lists no job")
    return lines


def jobs(overrides: Sequence[Override], lines: Sequence[Sequence[str]]) -> list[list[str]]:
    """Every job's overrides, line by line in the file's order, each line crossed with the sweep of ``overrides``."""
    parser = OverridesParser.create()
    return [
        job
        for line in lines
        for job in BasicSweeper.split_arguments([*overrides, *parser.parse_overrides(list(line))], None)[0]
    ]
