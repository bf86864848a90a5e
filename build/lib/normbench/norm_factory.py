"""A norm config as the callable every encoder calls at each norm site: ``norm(num_features) -> SequenceNorm``.

A file in conf/norm/ names its class (``_target_``) as a Hydra partial (``_partial_: true``): instantiate
gives ``functools.partial(cls, **options)`` and the encoders call it with each site's width, as
x-transformers builds ``norm_fn = partial(norm_class, dim)`` once. Three keys are normbench's, not the
class's: ``name`` (what the runs call the norm; the option, ``norm=<option>``, when absent), ``sync``
(passed only to a constructor that takes it, so that a sweep sets ``norm.sync`` over norms with and
without batch statistics) and ``input_batch_norm`` (``input_norm``). A class that is not a
``SequenceNorm`` (a user's, ``norm=custom``) is adapted and checked by normbench.custom_norm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from hydra.utils import instantiate

from normbench.custom_norm import TARGET, build_custom_norm, import_class
from normbench.errors import ConfigError
from normbench.norms import NORMS, MaskedBatchNorm, SequenceNorm
from normbench.signatures import constructor_parameters

NormFactory = Callable[[int], SequenceNorm]

#: the keys of a norm config that are normbench's, not its class's (``input_batch_norm``: see ``input_norm``)
OWN_KEYS = ("name", "sync", "input_batch_norm", "_partial_")


def norm_factory(config: Mapping[str, Any] | str, **options: Any) -> NormFactory:
    """The factory a norm config (``{"_target_": ..., **options}``) describes; a built-in's option and its
    options (``norm_factory("batch", sync=True)``) is the same config, written in Python."""
    if isinstance(config, str):
        if config not in NORMS:
            raise ConfigError(f"unknown norm {config!r}; accepted: {', '.join(NORMS)}")
        config = {TARGET: f"{NORMS[config].__module__}.{NORMS[config].__name__}"}
    config = {**config, **options}
    cls = import_class(config.get(TARGET))
    kwargs = {k: v for k, v in config.items() if k not in (*OWN_KEYS, TARGET)}
    accepted = [p.name for p in constructor_parameters(cls)][1:]  # after num_features
    if "sync" in accepted and "sync" in config:
        kwargs["sync"] = bool(config["sync"])
    if not issubclass(cls, SequenceNorm):  # a user's class: adapted and checked by normbench.custom_norm
        return partial(build_custom_norm, cls, config[TARGET], kwargs, norm_label(config, None))
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"norm={cls.option or cls.__name__}: unknown option {unknown[0]!r}; accepted options: {accepted}"
        )
    return instantiate({TARGET: config[TARGET], **kwargs, "_partial_": True})


def recurrent(factory: NormFactory) -> NormFactory:
    """The factory for norms inside a recurrent cell, called once per time step: a step where fewer than two
    sequences are still running falls back to running statistics instead of failing (the model checks the
    batch as a whole), unless the config says otherwise (``norm.small_batch``)."""
    cls, chosen = getattr(factory, "func", None), getattr(factory, "keywords", {})
    takes_it = isinstance(cls, type) and "small_batch" in [p.name for p in constructor_parameters(cls)]
    if takes_it and chosen.get("small_batch") is None:
        return partial(factory, small_batch="running")
    return factory


def input_norm(config: Mapping[str, Any], model_switch: bool) -> NormFactory | None:
    """The masked batch norm on the raw numeric features, when ``model.input_batch_norm`` or the norm config
    asks for it (``norm=input_batch``: "batch norm on the input" as one choice beside the norms in a sweep);
    under DDP it all-reduces its statistics when the other norms do (``norm.sync``)."""
    if not (model_switch or config.get("input_batch_norm")):
        return None
    return partial(MaskedBatchNorm, sync=bool(config.get("sync")))


def norm_label(config: Mapping[str, Any], option: str | None) -> str:
    """What the runs call a norm: its ``name``, else its option (``norm=<option>``), else its class's name."""
    if config.get("name"):
        return str(config["name"])
    if option and option != "custom":
        return option
    return str(config.get(TARGET) or "custom").rpartition(".")[2]


def check_before_data(norm_config: Mapping[str, Any], model_config: Mapping[str, Any]) -> None:
    """Build the norm at the model's width before the data is prepared (which may mean a download and a
    tokenizer), so that a bad option or a user's class that does not fit is refused at once."""
    width = model_config.get("d_model") or model_config.get("hidden_size")
    if width:
        norm_factory(norm_config)(int(width))
