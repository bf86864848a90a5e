"""Each constructor default stated once, in the code: Hydra reads the rest of a config from the class's signature.

A file in conf/{norm,model,data,callbacks}/ names its class (``_target_``) and holds only what differs from
the class's defaults. Its defaults list starts with ``- optional /schema/<group>@<package>: <option>``,
which brings in every other argument with the default its constructor declares (and the parents' it passes
``**kwargs`` on to; read from the source, nothing imported: normbench.signatures), registered by
``register_schemas`` in Hydra's ConfigStore before anything composes. So
``python train.py --cfg job`` shows every argument and ``norm.eps=1e-3`` needs no ``+``. The schemas are
untyped dicts: the values are checked by normbench.run.validation and the constructors, with one-line
errors. ``optional``: a reader that needs only the files' own values (the report's dashboard) composes without
registering them, and so does a file of the user's own search path that has no schema here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from normbench.signatures import source_defaults

#: the config groups whose files take their defaults from their class
GROUPS = ("norm", "model", "data", "callbacks")
#: constructor arguments the run supplies (from the data and the norm config), never a config key
SUPPLIED_BY_THE_RUN = {
    "norm": ("num_features",),
    "model": ("vocab_size", "norm", "pad_id", "num_features", "input_norm"),
}
#: the config's own defaults: keys that are normbench's, not the constructor's, and one tied to the root config
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    # under DDP, the global batch's statistics; every norm takes it (passed on only to a constructor that
    # takes it: normbench.norm_factory) so that a sweep sets norm.sync over norms with and without batch statistics
    "norm": {"sync": False},
    "model": {
        # numeric data only: masked batch norm on the raw input features, the first layer
        "input_batch_norm": False,
        # true: torch.compile the encoder (inductor; pays off on GPUs, not on a few CPU cores), or a backend name
        "compile": False,
    },
    "data": {
        # the training order: a function of (seed, epoch) only, the same for every norm
        "shuffle_seed": "${seed}",
        # training batches only: a last batch of one sequence has no batch statistics
        "drop_last": True,
    },
}


def class_nodes(config: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """``(key, node)`` of each class a config file names: ``(None, config)`` for a class at its top, one per
    class one level down (a callbacks file holds ``<name>: {_target_: ...}``)."""
    if "_target_" in config:
        yield None, config
        return
    for key, node in config.items():
        if isinstance(node, dict) and "_target_" in node:
            yield str(key), node


def schema(group: str, target: str) -> dict[str, Any]:
    """The defaults a config of ``group`` naming ``target`` gets from the code."""
    defaults = {"_target_": target, **source_defaults(target), **CONFIG_DEFAULTS.get(group, {})}
    return {k: v for k, v in defaults.items() if k not in SUPPLIED_BY_THE_RUN.get(group, ())}


def register_schemas(config_dir: str | Path) -> None:
    """Store ``schema/<group>/<option>`` for every file of ``GROUPS`` under ``config_dir`` that names a class
    (once per process and dir: train.py registers before its checks compose, and those compose again)."""
    _register(str(Path(config_dir).resolve()))


@functools.cache
def _register(config_dir: str) -> None:
    store = ConfigStore.instance()
    for group in GROUPS:
        for path in sorted(Path(config_dir, group).glob("*.yaml")):
            for _, node in class_nodes(OmegaConf.to_container(OmegaConf.load(path), resolve=False)):
                if node["_target_"] != "???":  # norm=custom: the user's class, named on the command line
                    store.store(group=f"schema/{group}", name=path.stem, node=schema(group, node["_target_"]))


@contextmanager
def composing(config_dir: str | Path, job_name: str = "train") -> Iterator[None]:
    """Hydra's ``initialize_config_dir`` with the schemas registered: inside it, ``compose`` gives the config
    ``python train.py`` runs with."""
    register_schemas(config_dir)
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3", job_name=job_name):
        yield
