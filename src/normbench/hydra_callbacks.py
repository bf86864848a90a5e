"""Hydra callbacks (``hydra.callbacks`` in conf/train.yaml) that keep failures to one line and lose nothing.

- ``OutputDirCheck``: an output dir that cannot be written is refused before the run or sweep starts,
  naming the dir, instead of a ``PermissionError`` trace from inside Hydra.
- ``SweepFailures``: a multirun whose jobs failed ends with one ``error:`` line listing them and
  exit code 2, after every other job ran and kept its results.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from normbench.errors import ConfigError, JobsFailedError, user_errors_as_one_line
from normbench.results import failed_jobs


def check_writable_dir(path: Path, option: str) -> None:
    """Raise `ConfigError` unless ``path`` is, or can be created as, a directory this process can write to.

    Probes the nearest existing ancestor with a temporary file (removed at once), so nothing is created
    when the check fails and no empty run dir is left when it passes.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = "not a directory"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                return
        except OSError as err:
            reason = err.strerror or type(err).__name__
    raise ConfigError(f"cannot write the output dir {path} ({existing}: {reason}); choose another with {option}=<dir>")


class OutputDirCheck(Callback):
    """Refuse an unwritable ``hydra.run.dir`` (single run) or ``hydra.sweep.dir`` (multirun) up front."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors_as_one_line():
            check_writable_dir(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors_as_one_line():
            check_writable_dir(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


class SweepFailures(Callback):
    """After a multirun, fail it (one line, exit code 2) if any job's results.json says it failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        total, failed = failed_jobs(sweep_dir)
        if not failed:
            return
        listed = "; ".join(f"{job}: {error}" for job, error in failed.items())
        with user_errors_as_one_line():
            raise JobsFailedError(
                f"{len(failed)} of {total} jobs in {sweep_dir} failed (each has status failed and its error in "
                f"its results.json; the others completed): {listed}"
            )
