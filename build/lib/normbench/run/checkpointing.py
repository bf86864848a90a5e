"""Checkpoints that survive SIGKILL and resume into the run that would have happened without it.

A resumed run equals the uninterrupted one because three things come back with the weights: the
training order (the datamodule's position in the epoch, see `normbench.data.sampling`), the random
state that dropout draws from (`RandomStateCheckpoint`), and the optimizer/scheduler/loop state
(Lightning). Files are written to a temporary name and renamed, so a kill never leaves half a file.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from normbench.errors import ConfigError, NonFiniteError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
#: the run facts a checkpoint records and a resume must match
IDENTITY_KEYS = ("model", "norm", "data", "model_config", "norm_config")


def first_non_finite_tensor(module: torch.nn.Module) -> str | None:
    """The name of the first parameter or buffer holding a NaN/inf, or None when all are finite."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files appear whole or not at all (temporary file, then rename), and
    never with non-finite weights: the run stops instead, and the last good checkpoint stays as it was.
    (`normbench.instruments.callbacks.NonFiniteGuard` stops a NaN loss before the optimizer step; this also holds
    with the instruments off, or when a finite step overflows a weight.)"""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        bad = first_non_finite_tensor(trainer.lightning_module)
        if bad is not None:
            raise NonFiniteError(
                f"non-finite weights in {bad} after step {trainer.global_step} (epoch {trainer.current_epoch}): "
                f"not checkpointed, {_what_is_kept(Path(filepath).parent)}; try a lower optim.lr or another norm"
            )
        partial = f"{filepath}.partial"
        trainer.save_checkpoint(partial, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def _what_is_kept(directory: Path) -> str:
    """What a stop for non-finite weights leaves: the earlier checkpoints, or none when none was written yet."""
    if directory.is_dir() and any(directory.glob("*.ckpt")):
        return f"{directory} keeps the last finite ones"
    return "no earlier checkpoint was written, so none is kept"


class RandomStateCheckpoint(Callback):
    """Keeps the RNG states (torch CPU and CUDA, Python) in every checkpoint and restores them on resume,
    so the dropout masks after a resume are the ones the uninterrupted run drew."""

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def silence_mid_epoch_resume_warning() -> None:
    """Lightning warns that a mid-epoch resume "can cause unreliable results" unless the *loader* is
    stateful; ours is exact because the datamodule restores the position (tested), so the warning is wrong here."""
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


def checkpoint_callbacks(
    run_dir: Path,
    every_n_steps: int,
    save_best: bool,
    monitor: tuple[str, str] = ("val/acc", "max"),
    keep_best: bool = False,
) -> list[Callback]:
    """``last.ckpt`` every ``every_n_steps`` optimizer steps, ``best.ckpt`` by ``monitor`` (metric, min|max)
    (the task module's: ``val/acc`` for classification, ``val/loss`` for language modeling), the RNG keeper.
    ``keep_best`` writes ``best.ckpt`` even without periodic checkpoints: early stopping evaluates it."""
    directory = run_dir / CHECKPOINT_DIR
    callbacks: list[Callback] = []
    if every_n_steps > 0:
        callbacks += [
            AtomicModelCheckpoint(dirpath=directory, save_last=True, save_top_k=0, every_n_train_steps=every_n_steps),
            RandomStateCheckpoint(),
        ]
    if keep_best or (save_best and every_n_steps > 0):
        callbacks.append(
            AtomicModelCheckpoint(
                dirpath=directory, filename="best", monitor=monitor[0], mode=monitor[1], auto_insert_metric_name=False
            )
        )
    return callbacks


def best_checkpoint(callbacks: list[Callback]) -> ModelCheckpoint | None:
    """The callback that keeps ``best.ckpt`` (the one with a monitor), if any."""
    return next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)


def _describe(identity: dict[str, Any]) -> str:
    return " ".join(f"{key}={identity.get(key)}" for key in ("model", "norm", "data"))


def check_checkpoint(path: Path, identity: dict[str, Any]) -> None:
    """Refuse a checkpoint that is missing, unreadable, or from another model/norm/data config."""
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; accepted: a .ckpt file written by normbench")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True).get("normbench")
    except Exception as err:  # noqa: BLE001  (any unreadable file gets the same one-line answer)
        raise ConfigError(
            f"checkpoint {path} cannot be read ({type(err).__name__}); it may be truncated or not a checkpoint; "
            "accepted as ckpt_path: a .ckpt file written by normbench"
        ) from None
    if not isinstance(saved, dict):
        raise ConfigError(f"checkpoint {path} was not written by normbench (no run identity in it)")
    differing = [key for key in IDENTITY_KEYS if saved.get(key) != identity.get(key)]
    if differing:
        raise ConfigError(
            f"checkpoint {path} was trained with {_describe(saved)}, this run is {_describe(identity)} "
            f"(differs in {', '.join(differing)}): resume with the config it was trained with, or start a new run"
        )


def resume_checkpoint(run_dir: Path, resume: bool, ckpt_path: str | None) -> Path | None:
    """The checkpoint to continue from: ``ckpt_path`` if given, else ``<run_dir>/checkpoints/last.ckpt``
    when ``resume`` is on and it exists (a run killed before its first checkpoint starts afresh)."""
    if ckpt_path:
        return Path(ckpt_path).expanduser()
    last = run_dir / CHECKPOINT_DIR / LAST
    return last if resume and last.is_file() else None
