"""Experiment loggers from `conf/logger/`: W&B (offline unless asked), CSV, or none."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from normbench.errors import ConfigError

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"


def wandb_mode(offline: bool) -> str:
    """``WANDB_MODE`` from the environment wins; otherwise the config's ``offline`` switch decides."""
    return os.environ.get("WANDB_MODE") or ("offline" if offline else "online")


def build_logger(
    cfg: DictConfig | None, run_dir: Path, run_name: str, tags: list[str], config: dict[str, Any]
) -> Logger | None:
    """Instantiate the configured logger into ``run_dir`` with the run's name, tags and resolved config."""
    if not cfg or "_target_" not in cfg:
        return None
    if cfg._target_ != WANDB_TARGET:
        return instantiate(cfg, save_dir=str(run_dir))
    options = OmegaConf.to_container(cfg, resolve=True)
    mode = wandb_mode(bool(options.pop("offline", True)))
    # Lightning's own `offline=True` sets WANDB_MODE for the whole process; passing `mode` keeps
    # every job of a multirun free to choose its own.
    options.update(save_dir=str(run_dir), name=run_name, tags=tags, config=config, mode=mode, offline=False)
    logger = instantiate(options, _convert_="all", _recursive_=False)
    start_wandb_run(logger, mode)
    return logger


def start_wandb_run(logger: WandbLogger, mode: str) -> None:
    """Start the run now, so a missing login fails at start-up with advice, not mid-training."""
    try:
        logger.experiment  # noqa: B018  (creates the run)
    except wandb_start_errors() as err:
        raise wandb_start_error(
            err, mode, "log offline with logger.offline=true (or WANDB_MODE=offline), or use logger=csv / logger=none"
        ) from None


def wandb_start_errors() -> tuple[type[Exception], ...]:
    """What ``wandb.init`` raises when it cannot log in or reach the server."""
    import wandb

    return (wandb.errors.UsageError, wandb.errors.CommError, wandb.errors.AuthenticationError)


def wandb_start_error(err: Exception, mode: str, alternatives: str) -> ConfigError:
    """One line saying why W&B did not start and how to log in or not log to it."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"W&B could not start an {mode} run ({first_line}): run `wandb login` or set WANDB_API_KEY, or {alternatives}"
    )


def finish_wandb() -> None:
    """Close the W&B run of this job, so the next job of a multirun never appends to it."""
    import sys

    if "wandb" in sys.modules:
        wandb = sys.modules["wandb"]
        if wandb.run is not None:
            wandb.finish()
