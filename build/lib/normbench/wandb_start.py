"""Starting W&B: the mode a job or the report logs in, and one line when it cannot start (torch-free: the
report uploads with it)."""

from __future__ import annotations

import os

from normbench.errors import ConfigError


def wandb_mode(offline: bool) -> str:
    """``WANDB_MODE`` from the environment wins; otherwise the config's ``offline`` switch decides."""
    return os.environ.get("WANDB_MODE") or ("offline" if offline else "online")


def wandb_start_errors() -> tuple[type[Exception], ...]:
    """What ``wandb.init`` raises when it cannot log in or reach the server."""
    import wandb

    return (wandb.errors.UsageError, wandb.errors.CommError, wandb.errors.AuthenticationError)


def wandb_start_error(err: Exception, mode: str, alternatives: str, action: str | None = None) -> ConfigError:
    """One line saying why W&B did not start (or do ``action``) and how to log in or not log to it."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"W&B could not {action or f'start an {mode} run'} ({first_line}): "
        f"run `wandb login` or set WANDB_API_KEY, or {alternatives}"
    )
