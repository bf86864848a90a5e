"""One check of the whole composed config before anything is built: types, ranges and cross-field rules.

A run that fails on a bad value after training throws its metrics away, and a value that reaches torch
or Lightning unchecked comes back as a stack trace that does not name the key. `validate_config` reads
the resolved config once at start-up and raises a `ConfigError` naming the key, the value and what is
accepted. Only keys that exist are checked, so a config group another option adds (a user's ``_target_``
norm with its own arguments, a data kind with its own keys) passes untouched where no rule names it.

`check_override_keys` runs before Hydra: a command-line key the composed config lacks (``norm.epss=1e-3``)
is refused in one line with the nearest valid key, instead of Hydra's struct error and exit code 1.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a key accepts: ``accepted`` words the message shows, ``check`` the test of a value."""

    accepted: str
    check: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def integer(minimum: int | None = None, maximum: int | None = None, *, null: bool = False, also: tuple = ()) -> Rule:
    """An integer in ``[minimum, maximum]`` (or one of ``also``; None with ``null``)."""
    words = "an integer" + (f" >= {minimum}" if maximum is None and minimum is not None else "")
    if maximum is not None:
        words = f"an integer in [{minimum}, {maximum}]"
    words += "".join(f" or {v}" for v in also) + (" or null" if null else "")

    def check(value: Any) -> bool:
        if value is None:
            return null
        if not _is_int(value):
            return False
        low_ok = minimum is None or value >= minimum
        return (low_ok and (maximum is None or value <= maximum)) or value in also

    return Rule(words, check)


def number(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False, null: bool = False
) -> Rule:
    """A finite number in the interval from ``low`` to ``high`` (open ends as asked)."""
    if high is None:
        words = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        words = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    words += " or null" if null else ""

    def check(value: Any) -> bool:
        if value is None:
            return null
        if not _is_number(value):
            return False
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    return Rule(words, check)


def boolean(*, null: bool = False) -> Rule:
    return Rule("true or false" + (" or null" if null else ""), lambda v: isinstance(v, bool) or (null and v is None))


def choice(*values: Any) -> Rule:
    return Rule(", ".join("null" if v is None else str(v) for v in values), lambda v: v in values)


def integers(minimum: int) -> Rule:
    """A list of integers >= ``minimum`` (empty or null: none)."""
    return Rule(
        f"a list of integers >= {minimum}",
        lambda v: v is None or (isinstance(v, list) and all(_is_int(x) and x >= minimum for x in v)),
    )


def batches() -> Rule:
    """Lightning's limit_*_batches / val_check_interval: a share in (0, 1] or a count >= 1."""
    return Rule(
        "a share in (0, 1] (float) or a number of batches >= 1 (integer)",
        lambda v: (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
    )


def text(*, null: bool = False) -> Rule:
    return Rule("a string" + (" or null" if null else ""), lambda v: isinstance(v, str) or (null and v is None))


def devices() -> Rule:
    return Rule(
        "an integer >= 1, -1 (all), auto, or a list of device indices",
        lambda v: (_is_int(v) and (v >= 1 or v == -1)) or isinstance(v, (str, list)),
    )


#: key (a glob over the dotted path) -> what it accepts; keys a config lacks are not checked
RULES: dict[str, Rule] = {
    "seed": integer(0, 2**32 - 1),
    "threads": integer(1, null=True),
    "resume": boolean(),
    "ckpt_path": text(null=True),
    "experiment_name": text(),
    "checkpoint.every_n_steps": integer(0),
    "checkpoint.save_best": boolean(),
    "evaluate.lengths": integers(1),
    "evaluate.batch_sizes": integers(1),
    "evaluate.pad_to": integers(0),
    "optim.lr": number(0, low_open=True),
    "optim.weight_decay": number(0),
    "optim.warmup": number(0, 1, high_open=True),
    "data.batch_size": integer(1),
    "data.max_len": integer(1, null=True),  # null: a language model (its windows are data.seq_len long)
    "data.min_len": integer(1),
    "data.seq_len": integer(1),
    "data.pad_to": integer(0),
    "data.vocab_size": integer(3, null=True),
    "data.num_workers": integer(0),
    "data.bucket": boolean(),
    "data.bucket_pool": integer(1),
    "data.drop_last": boolean(),
    "data.spread": number(0, 1),
    "data.num_train": integer(1),
    "data.num_val": integer(1),
    "data.num_test": integer(1),
    "data.train_windows": integer(1, null=True),
    "data.*_seed": integer(0),
    "data.tokenizer": choice(None, "wordpiece", "bpe", "word", "char", "whitespace"),
    "data.lowercase": boolean(null=True),
    "model.d_model": integer(1),
    "model.n_heads": integer(1),
    "model.n_layers": integer(1),
    "model.d_ff": integer(1),
    "model.embed_dim": integer(1),
    "model.hidden_size": integer(1),
    "model.num_layers": integer(1),
    "model.dropout": number(0, 1, high_open=True),
    "model.pre_norm": boolean(),
    "model.causal": boolean(),
    "model.cell": choice("lstm", "gru"),
    "trainer.max_epochs": integer(1, null=True, also=(-1,)),
    "trainer.max_steps": integer(1, also=(-1,)),
    "trainer.min_epochs": integer(0, null=True),
    "trainer.min_steps": integer(0, null=True),
    "trainer.limit_*_batches": batches(),
    "trainer.val_check_interval": Rule(
        "null, a share of an epoch in (0, 1] (float) or a number of batches >= 1 (integer)",
        lambda v: v is None or batches().check(v),
    ),
    "trainer.check_val_every_n_epoch": integer(1, null=True),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.gradient_clip_val": number(0, null=True),
    "trainer.gradient_clip_algorithm": choice(None, "norm", "value"),
    "trainer.log_every_n_steps": integer(1),
    "trainer.num_sanity_val_steps": integer(0, also=(-1,)),
    "trainer.devices": devices(),
    "trainer.num_nodes": integer(1),
    "trainer.deterministic": Rule("true, false or warn", lambda v: isinstance(v, bool) or v == "warn"),
    "trainer.enable_model_summary": boolean(),
    "trainer.sync_batchnorm": boolean(),
    "trainer.use_distributed_sampler": boolean(),
    "callbacks.*.every_n_steps": integer(1),
    "callbacks.*.probe_size": integer(1),
    "callbacks.*.partner_sets": integer(2),
    "callbacks.*.partners": integer(1),
    "callbacks.*.position": integer(0),
    "callbacks.*.offset": integer(1),
    "callbacks.*.depth": integer(1),
    "logger.offline": boolean(),
}

#: the built-in norms' arguments (checked only for a norm of normbench.norms: a user's class has its own)
NORM_RULES: dict[str, Rule] = {
    "norm.name": text(),
    "norm.eps": number(0, low_open=True),
    "norm.momentum": number(0, 1, low_open=True),
    "norm.affine": boolean(),
    "norm.sync": boolean(),
    "norm.groups": integer(1),
    "norm.max_steps": integer(1),
    "norm.beyond": choice("last", "error"),
    "norm.gamma_init": number(-math.inf),
    "norm.r_max": number(1),
    "norm.d_max": number(0),
    "norm.*_steps": integer(0),
    "norm.alpha_*": number(0, 1),
}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else "null" if value is None else str(value)


def refuse(key: str, value: Any, accepted: str) -> ConfigError:
    """The one-line error every check raises: the key, the value and what is accepted."""
    return ConfigError(f"{key}={_shown(value)} is out of range; accepted: {accepted}")


def flat_items(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``("data.batch_size", 64), ...``: every leaf of a resolved config (lists are leaves)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping) and value:
                yield from flat_items(value, path)
            else:
                yield path, value
    else:
        yield prefix, node


def _rule_for(key: str, rules: Mapping[str, Rule]) -> Rule | None:
    if key in rules:
        return rules[key]
    return next((rule for pattern, rule in rules.items() if fnmatchcase(key, pattern)), None)


def _built_in_norm(norm: Any) -> str | None:
    """The class name of a built-in norm config (``_target_: normbench.norms.GroupNorm`` -> ``GroupNorm``)."""
    target = str(norm.get("_target_", "")) if isinstance(norm, Mapping) else ""
    return target.removeprefix("normbench.norms.") if target.startswith("normbench.norms.") else None


def check_values(config: Mapping[str, Any]) -> None:
    """Every key a rule names holds an accepted value (a user's norm class's keys are its own)."""
    rules = dict(RULES)
    if _built_in_norm(config.get("norm")):
        rules.update(NORM_RULES)
    for key, value in flat_items(config):
        rule = _rule_for(key, rules)
        if rule is not None and not rule.check(value):
            raise refuse(key, value, rule.accepted)


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name)
    return value if isinstance(value, Mapping) else {}


def check_cross_fields(config: Mapping[str, Any]) -> None:
    """Rules that tie keys together: heads divide the width, groups divide the channels, split sums,
    lengths in order, a training budget of at least one step, no padded evaluation of a language model,
    instrument options without their instrument, optimizer betas."""
    model, norm, data = (_section(config, name) for name in ("model", "norm", "data"))
    trainer, optim = _section(config, "trainer"), _section(config, "optim")
    if "d_model" in model and "n_heads" in model and model["d_model"] % model["n_heads"]:
        raise refuse("model.n_heads", model["n_heads"], f"a divisor of model.d_model={model['d_model']}")
    width = model.get("d_model", model.get("hidden_size"))
    if _built_in_norm(norm) == "GroupNorm" and _is_int(width) and width % norm.get("groups", 1):
        raise refuse("norm.groups", norm["groups"], f"a divisor of the model width {width}")
    split = data.get("split")
    if split is not None and not (
        isinstance(split, list)
        and len(split) == 3
        and all(_is_number(f) and 0 < f < 1 for f in split)
        and math.isclose(sum(split), 1.0, abs_tol=1e-6)
    ):
        raise refuse("data.split", split, "three fractions (train, val, test), each in (0, 1), summing to 1")
    if _is_int(data.get("min_len")) and _is_int(data.get("max_len")) and data["min_len"] > data["max_len"]:
        raise refuse("data.min_len", data["min_len"], f"an integer <= data.max_len={data['max_len']}")
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1:
        raise refuse("trainer.max_epochs", -1, "an integer >= 1, or -1 together with trainer.max_steps >= 1")
    path = data.get("path")
    if str(data.get("_target_", "")).endswith("local_datamodule") and path and Path(path).expanduser().is_dir():
        raise refuse(
            "data.path", path, "a file (.csv, .tsv, .jsonl, or plain text for language modeling), not a directory"
        )
    if "seq_len" in data and (_section(config, "evaluate").get("pad_to") or []):  # a language model's windows
        raise refuse("evaluate.pad_to", config["evaluate"]["pad_to"], "an empty list for a language model (no padding)")
    for name, instrument in _section(config, "callbacks").items():  # options left for an instrument not on
        if isinstance(instrument, Mapping) and "_target_" not in instrument:
            raise refuse(
                f"callbacks.{name}",
                instrument,
                f"the options of an instrument that is on (callbacks=none or a list without {name} turned it off: "
                f"add {name} to callbacks, or drop its options with ~callbacks.{name})",
            )
    betas = optim.get("betas")
    if betas is not None and not (
        isinstance(betas, list) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)
    ):
        raise refuse("optim.betas", betas, "two numbers in [0, 1)")


def check_trainer_keys(trainer: Mapping[str, Any]) -> None:
    """Every trainer key is an argument of Lightning's ``Trainer`` (``+trainer.max_step=5`` names the nearest)."""
    import inspect

    from lightning.pytorch import Trainer

    accepted = [name for name in inspect.signature(Trainer.__init__).parameters if name != "self"]
    for key, value in trainer.items():
        if key != "_target_" and key not in accepted:
            hint = _nearest(key, accepted, "trainer.")
            raise ConfigError(f"trainer.{key}={_shown(value)} is not a Lightning Trainer argument{hint}")
    if "precision" in trainer:
        from typing import get_args

        from lightning.fabric.connector import _PRECISION_INPUT

        literals = [value for group in get_args(_PRECISION_INPUT) for value in get_args(group)]
        precisions = ["auto", *(value for value in literals if isinstance(value, str))]
        if trainer["precision"] not in [*precisions, *literals]:
            raise refuse("trainer.precision", trainer["precision"], ", ".join(precisions))


def _close(key: str, candidates: list[str], cutoff: float = 0.6) -> list[str]:
    return difflib.get_close_matches(key, candidates, n=1, cutoff=cutoff)


def _nearest(key: str, accepted: list[str], prefix: str = "") -> str:
    close = _close(key, accepted)
    return f"; did you mean {prefix}{close[0]}?" if close else f"; accepted: {', '.join(prefix + a for a in accepted)}"


def validate_config(config: Mapping[str, Any]) -> None:
    """The whole resolved config (``OmegaConf.to_container(cfg, resolve=True)``), checked before anything is built."""
    check_values(config)
    check_cross_fields(config)
    trainer = _section(config, "trainer")
    if str(trainer.get("_target_", "")).startswith("lightning."):
        check_trainer_keys(trainer)


def check_override_keys(argv: list[str], config_dir: Path) -> None:
    """Raise `ConfigError` for a command-line key the composed config does not have (``norm.epss=1e-3``),
    naming the nearest key it does have; anything else Hydra would refuse is left to Hydra."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from normbench.cli.choices import parse_command_line
    from normbench.cli.schemas import composing

    parsed = parse_command_line(argv)
    if parsed is None or parsed[0].config_dir or GlobalHydra.instance().is_initialized():
        return
    args, overrides = parsed
    single = []
    for override in overrides:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_delete() or override.is_add() or override.is_force_add():
            continue
        if override.is_choice_sweep():
            single.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        elif not override.is_sweep_override():
            single.append(override.input_line)
    unknown = None
    try:
        with composing(config_dir, job_name="check"):
            compose(args.config_name or "train", single)
    except Exception as err:  # noqa: BLE001  (only the struct error is ours to explain; Hydra reports the rest)
        cause, named = err.__cause__, re.match(r"Could not override '([^']+)'", str(err))
        if named is None or "is not in struct" not in str(cause):
            return
        unknown = named[1]
    if not unknown:
        return
    with composing(config_dir, job_name="check"):
        groups = [o for o in single if "." not in o.split("=", 1)[0]]
        known = [k for k, _ in flat_items(OmegaConf.to_container(compose(args.config_name or "train", groups)))]
    value = next((o.value() for o in overrides if o.key_or_group == unknown), None)
    parent = unknown.rsplit(".", 1)[0] if "." in unknown else ""
    siblings = [k for k in known if "." in k and k.rsplit(".", 1)[0] == parent]
    siblings = siblings or list(dict.fromkeys(k.split(".", 1)[0] for k in known))  # an unknown section: the sections
    leaf = unknown.rsplit(".", 1)[-1]
    close = [f"{parent}.{m}" if parent else m for m in _close(leaf, [k.rsplit(".", 1)[-1] for k in siblings])]
    close = close or _close(unknown, known, cutoff=0.8)  # a misspelt section (trainr.max_steps)
    hint = f"did you mean {close[0]}?" if close else f"accepted: {', '.join(siblings)}"
    raise ConfigError(
        f"{unknown}={_shown(value)} is unknown: the config has no key {unknown}; {hint} (+{unknown}=... adds a new key)"
    )
