"""The config resolvers the YAML files use, registered wherever normbench is imported (Hydra's workers too)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from normbench.cli.dirnames import short_dirname, sweep_subdir


def first_set(*values: Any) -> Any:
    """The first value that is not null: ``${first_set:${data.max_len},${oc.select:data.seq_len,null}}`` is the
    longest sequence a model trains on, a classification task's cut or a language model's window."""
    return next((value for value in values if value is not None), None)


def register() -> None:
    OmegaConf.register_new_resolver("short_dirname", short_dirname, replace=True)
    OmegaConf.register_new_resolver("sweep_subdir", sweep_subdir, replace=True)
    OmegaConf.register_new_resolver("first_set", first_set, replace=True)
