"""Experiment loggers from `conf/logger/`: W&B (offline unless asked), CSV, or none.

A job keeps one W&B run across kills: its id is stored in the job dir when it starts, and
``resume=true`` reopens that id. A resumed segment leaves out what the killed one had already
logged (the resumed training recomputes those steps exactly) and continues W&B's own ``_step``,
so the run's history reads as one. In a multirun every job's run is also linked into
``<sweep dir>/wandb/``, one W&B dir for the whole sweep (``wandb leet <sweep dir>/wandb``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from normbench.wandb_start import wandb_mode, wandb_start_error, wandb_start_errors

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"
#: the file of the job dir holding its W&B run id (beside W&B's own files)
RUN_ID_FILE = "wandb/run_id"
#: Lightning's x-axis key of every logged metric
STEP_KEY = "trainer/global_step"


class JobWandbLogger(WandbLogger):
    """``WandbLogger`` that continues a killed segment of its run: metrics at steps the earlier segments
    already logged are left out, and W&B's ``_step`` goes on from theirs (``next_step``)."""

    def __init__(self, *args: Any, logged_until: dict[str, int] | None = None, next_step: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._logged_until = logged_until or {}
        self._next_step = next_step

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._next_step:  # a first segment: Lightning's own logging
            super().log_metrics(metrics, step)
            return
        if step is not None:
            logged = {k: v for k, v in metrics.items() if step <= self._logged_until.get(k, -1)}
            self.experiment.summary.update(logged)  # the summary stays the run's last word
            metrics = {k: v for k, v in metrics.items() if k not in logged}
            if not metrics:
                return
            metrics = {**metrics, STEP_KEY: step}
        self.experiment.log(dict(metrics), step=self._next_step)
        self._next_step += 1


def build_logger(
    cfg: DictConfig | None,
    run_dir: Path,
    run_name: str,
    tags: list[str],
    config: dict[str, Any],
    resume: bool = False,
    sweep_dir: Path | None = None,
) -> Logger | None:
    """Instantiate the configured logger into ``run_dir`` with the run's name, tags and resolved config.

    W&B: the run's id is stored in the job dir; ``resume`` reopens the run of the stored id (a new one
    when there is none); ``sweep_dir`` (a multirun's) gets a link to the run in its ``wandb/`` dir."""
    if not cfg or "_target_" not in cfg:
        return None
    if cfg._target_ != WANDB_TARGET:
        return instantiate(cfg, save_dir=str(run_dir))
    options = OmegaConf.to_container(cfg, resolve=True)
    mode = wandb_mode(bool(options.pop("offline", True)))
    flush_every_s = options.pop("flush_every_s", None)
    run_id = stored_run_id(run_dir) if resume else None
    logged_until, last_step = logged_history(run_dir, run_id) if run_id else ({}, -1)
    # Lightning's own `offline=True` sets WANDB_MODE for the whole process; passing `mode` keeps
    # every job of a multirun free to choose its own. Lightning opens the id with resume="allow".
    options.update(
        _target_=f"{__name__}.JobWandbLogger",
        save_dir=str(run_dir),
        name=run_name,
        tags=tags,
        config=config,
        mode=mode,
        offline=False,
        id=run_id,
        logged_until=logged_until,
        next_step=last_step + 1,
    )
    settings = {} if flush_every_s is None else {"settings": wandb_settings(float(flush_every_s))}
    logger = instantiate(options, _convert_="all", _recursive_=False, **settings)
    start_wandb_run(logger, mode)
    if rank_zero_only.rank == 0:  # the only process with a run
        store_run_id(run_dir, logger.experiment.id)
        if sweep_dir is not None:
            link_into_sweep(Path(logger.experiment.dir).parent, sweep_dir)
    return logger


def wandb_settings(flush_every_s: float) -> Any:
    """W&B buffers the run file and writes it every 15 s by default; a SIGKILL loses what is unwritten."""
    import wandb

    return wandb.Settings(x_transaction_log_flush_interval=flush_every_s)


def log_final(logger: Logger | None, values: dict[str, float]) -> None:
    """The run's final metrics and instruments (those of results.json) as W&B's run summary: its history
    holds every point logged, but instruments logged between two of Lightning's ``log_every_n_steps``
    flushes, and the extra evaluations, reach the run only here. (CSV has no summary: results.json is it.)"""
    if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
        logger.experiment.summary.update(values)


def stored_run_id(run_dir: Path) -> str | None:
    """The W&B run id the job dir holds (written when its run started), or None."""
    path = run_dir / RUN_ID_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def store_run_id(run_dir: Path, run_id: str) -> None:
    """Keep the run id in the job dir; written to a temporary name and renamed, so a kill never leaves half."""
    path = run_dir / RUN_ID_FILE
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(run_id + "\n")
    os.replace(partial, path)


def run_segments(run_dir: Path, run_id: str) -> list[Path]:
    """The transaction logs W&B wrote for ``run_id`` under ``run_dir``, oldest first (one per start)."""
    logs = (run_dir / "wandb").glob(f"*run-*-{run_id}/run-{run_id}.wandb")
    return sorted(logs, key=lambda log: log.parent.name.removeprefix("offline-"))


def read_records(log: Path) -> list[dict[str, Any]]:
    """The records of a W&B transaction log, read by W&B's own inspector (``wandb leet inspect --json``);
    a log cut short by a kill gives the records written before it."""
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def logged_history(run_dir: Path, run_id: str) -> tuple[dict[str, int], int]:
    """What the earlier segments of the run logged: the last Lightning step of each key, and the last
    W&B ``_step`` (-1 when nothing was logged)."""
    logged_until: dict[str, int] = {}
    last_step = -1
    for log in run_segments(run_dir, run_id):
        for record in read_records(log):
            if record.get("type") != "history":
                continue
            item = record["history"].get("item", {})
            last_step = max(last_step, int(item.get("_step", -1)))
            if STEP_KEY in item:
                for key in item:
                    if not key.startswith("_"):
                        logged_until[key] = max(logged_until.get(key, -1), int(item[STEP_KEY]))
    return logged_until, last_step


def link_into_sweep(wandb_run_dir: Path, sweep_dir: Path) -> None:
    """Link a job's W&B run dir into ``<sweep_dir>/wandb/`` (relative, so the sweep dir can move)."""
    shared = sweep_dir.resolve() / "wandb"
    shared.mkdir(parents=True, exist_ok=True)
    link = shared / wandb_run_dir.name
    if not link.exists():
        link.symlink_to(os.path.relpath(wandb_run_dir.resolve(), shared))


def start_wandb_run(logger: WandbLogger, mode: str) -> None:
    """Start the run now, so a missing login fails at start-up with advice, not mid-training."""
    try:
        logger.experiment  # noqa: B018  (creates the run)
    except wandb_start_errors() as err:
        raise wandb_start_error(
            err, mode, "log offline with logger.offline=true (or WANDB_MODE=offline), or use logger=csv / logger=none"
        ) from None


def finish_wandb() -> None:
    """Close the W&B run of this job, so the next job of a multirun never appends to it."""
    import sys

    if "wandb" in sys.modules:
        wandb = sys.modules["wandb"]
        if wandb.run is not None:
            wandb.finish()
