"""Hydra callbacks (``hydra.callbacks`` in conf/train.yaml) that keep failures to one line and lose nothing.

- ``OutputDirCheck``: an output dir that cannot be written is refused before the run or sweep starts,
  naming the dir, instead of a ``PermissionError`` trace from inside Hydra.
- ``OutputDirCheck`` also refuses a run (or sweep) into a dir that holds a finished run, unless
  ``resume=true``: Hydra would overwrite its ``.hydra/`` config and the run its results.json.
- ``SweepFailures``: a multirun whose jobs failed ends with one ``error:`` line listing them and
  exit code 2, after every other job ran and kept its results.
- ``SweepProgress``: jobs done / total, failed so far, elapsed and ETA, printed as each job ends and kept
  in ``sweep_progress.json`` in the sweep dir (`normbench.cli.sweep_progress`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from normbench.cli import job_list, sweep_progress
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


class SweepProgress(Callback):
    """The sweep-level progress line and ``sweep_progress.json``, under every launcher.

    ``on_multirun_start`` (the launching process) counts the jobs and writes the fresh file; ``on_job_start``
    and ``on_job_end`` run in the process that runs the job (a joblib worker gets a copy of this object), so
    each job times itself and adds itself to the shared file under its lock. A job counts as failed when
    Hydra saw it raise or its results.json does not say ``ok`` (a user error ends a job without raising).
    """

    def __init__(self) -> None:
        self._job_started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params")
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        sweeper = str(config.hydra.sweeper.get("_target_", ""))
        params = OmegaConf.to_container(params) if params else None
        total = None
        if sweeper.endswith("JobListSweeper"):
            with user_errors_as_one_line():  # before the sweeper reads it: a bad file gets one line, not Hydra's trace
                lines = job_list.read_lines(
                    None if OmegaConf.is_missing(config.hydra.sweeper, "jobs") else config.hydra.sweeper.jobs
                )
            total = sweep_progress.sweep_size(params, overrides, lines)
        elif sweeper.endswith("BasicSweeper"):
            total = sweep_progress.sweep_size(params, overrides)
        sweep_progress.start(Path(config.hydra.sweep.dir), total)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:  # a single run, or a DDP child re-running its one job
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        sweep_dir = Path(config.hydra.sweep.dir)
        record = read_results(job_dir)
        failed = job_return.status != JobStatus.COMPLETED or record is None or record.get("status") != "ok"
        now = time.time()
        seconds = now - self._job_started if self._job_started is not None else 0.0
        job = str(job_dir.relative_to(sweep_dir)) if job_dir.is_relative_to(sweep_dir) else str(job_dir)
        progress = sweep_progress.job_ended(sweep_dir, job, seconds, failed, now)
        print(f"normbench: {sweep_progress.line(progress)} ({sweep_dir / sweep_progress.PROGRESS_FILE})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        progress = sweep_progress.finish(Path(config.hydra.sweep.dir))
        if progress is not None:
            print(f"normbench: {sweep_progress.line(progress)}", flush=True)
