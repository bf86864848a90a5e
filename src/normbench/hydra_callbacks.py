"""Hydra callbacks (``hydra.callbacks`` in conf/train.yaml) that keep failures to one line and lose nothing.

- ``OutputDirCheck``: an output dir that cannot be written is refused before the run or sweep starts,
  naming the dir, instead of a ``PermissionError`` trace from inside Hydra.
- ``OutputDirCheck`` also refuses a run (or sweep) into a dir that holds a finished run, unless
  ``resume=true``: Hydra would overwrite its ``.hydra/`` config and the run its results.json.
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
from normbench.results import RESULTS_FILE, failed_jobs, read_results


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


def check_no_finished_run(path: Path, option: str, resume: Any, recursive: bool = False) -> None:
    """Raise `ConfigError` when ``path`` (or, for a sweep, any job dir under it) holds a finished run's
    results.json and ``resume`` is off: nothing is written yet, so that run's record and config stay as they are."""
    if resume is True or not path.is_dir():
        return
    records = path.glob(f"**/{RESULTS_FILE}") if recursive else [path / RESULTS_FILE]
    finished = next((r.parent for r in records if (read_results(r.parent) or {}).get("status") == "ok"), None)
    if finished is not None:
        raise ConfigError(
            f"{option}={path} holds a finished run ({finished / RESULTS_FILE}, status ok) that this run would "
            f"overwrite; keep it and continue with resume=true, or choose another dir with {option}=<dir>"
        )


class OutputDirCheck(Callback):
    """Refuse an unwritable ``hydra.run.dir`` (single run) or ``hydra.sweep.dir`` (multirun) up front, and
    one that holds a finished run (without ``resume=true``), before Hydra writes anything into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors_as_one_line():
            check_writable_dir(Path(config.hydra.run.dir), "hydra.run.dir")
            check_no_finished_run(Path(config.hydra.run.dir), "hydra.run.dir", config.get("resume"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors_as_one_line():
            check_writable_dir(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
            check_no_finished_run(Path(config.hydra.sweep.dir), "hydra.sweep.dir", config.get("resume"), True)


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
