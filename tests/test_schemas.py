"""Each default stated once: the config files hold what differs from their class, the schemas the rest."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose
from hydra.utils import get_object
from omegaconf import OmegaConf

from normbench.cli.schemas import GROUPS, class_nodes, composing, schema
from normbench.norms import NORMS
from normbench.signatures import constructor_parameters, source_defaults

CONF = Path(__file__).resolve().parents[1] / "conf"


class _Base:
    def __init__(self, a: int = 1, b: tuple = (2, 3), obj: object = object(), required: int = 0) -> None: ...


class _Middle(_Base):
    def __init__(self, c: str = "x", a: int = 5, **kwargs) -> None: ...


class _Leaf(_Middle):
    def __init__(self, needed, d: None = None, **kwargs) -> None: ...


class _Closed(_Base):
    def __init__(self, e: float = 0.5) -> None: ...


def _function(path, fmt: str = "auto", **kwargs): ...


def test_source_defaults_follow_kwargs_up_to_the_class_that_takes_them() -> None:
    # the nearest class's default wins (_Middle's a=5), tuples become lists, an object default is left out
    assert source_defaults(f"{__name__}._Leaf") == {"d": None, "c": "x", "a": 5, "b": [2, 3], "required": 0}
    assert source_defaults(f"{__name__}._Closed") == {"e": 0.5}  # no **kwargs: the parents' are not its own
    assert source_defaults(f"{__name__}._function") == {"fmt": "auto"}


def _object_defaults(target: str) -> dict:
    """The same defaults read from the imported object with inspect."""
    defaults = {}
    for param in constructor_parameters(get_object(target)):
        value = list(param.default) if isinstance(param.default, tuple) else param.default
        if param.default is not param.empty and (value is None or isinstance(value, bool | int | float | str | list)):
            defaults[param.name] = value
    return defaults


def _class_files():
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            for key, node in class_nodes(raw):
                yield group, path, raw, key, node


def test_the_source_reading_agrees_with_inspect_for_every_class_a_config_names() -> None:
    targets = {node["_target_"] for *_, node in _class_files() if node["_target_"] != "???"}
    assert len(targets) >= 30
    for target in sorted(targets):
        assert source_defaults(target) == _object_defaults(target), target
    assert source_defaults(f"{__name__}._Leaf") == _object_defaults(f"{__name__}._Leaf")


def test_no_config_file_restates_a_default_of_its_class_and_each_takes_the_rest_from_its_schema() -> None:
    files = list(_class_files())
    assert len(files) >= 37  # 12 norms, 3 models, 15 data sets, 7 instruments
    for group, path, raw, key, node in files:
        if node["_target_"] == "???":  # norm=custom: the class comes from the command line
            continue
        defaults = schema(group, node["_target_"])
        restated = [k for k, v in node.items() if k != "_target_" and k in defaults and defaults[k] == v]
        assert not restated, f"{path.relative_to(CONF)} restates {restated}"
        entry = f"optional /schema/{group}@{key or '_here_'}"
        assert {entry: path.stem} in raw["defaults"], f"{path.relative_to(CONF)} lacks `- {entry}: {path.stem}`"


@pytest.mark.parametrize("option", list(NORMS))
def test_a_composed_norm_holds_every_argument_and_takes_overrides_without_a_plus(option: str) -> None:
    arguments = source_defaults(f"normbench.norms.{NORMS[option].__name__}")
    overrides = ["norm.sync=true", *(["norm.eps=0.001"] if "eps" in arguments else [])]
    with composing(CONF):
        norm = OmegaConf.to_container(compose("train", overrides=[f"norm={option}", *overrides]).norm)
    assert set(norm) == {*arguments, "_target_", "_partial_", "sync"}
    assert norm["sync"] is True and norm.get("eps", 0.001) == 0.001


def test_a_composed_model_and_data_config_hold_their_defaults_from_the_code() -> None:
    with composing(CONF):
        cfg = compose("train", overrides=["model=gru", "data=mr", "seed=7"])
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.compile, cfg.model.input_batch_norm) == (
        "gru",
        128,
        False,
        False,
    )
    assert (cfg.data.max_len, cfg.data.vocab_size, cfg.data.drop_last, cfg.data.shuffle_seed) == (48, 8000, True, 7)
    assert cfg.callbacks.causal_leak.position == 8 and cfg.callbacks.grad_norms.depth == 3


def test_the_files_compose_without_the_schemas_and_registering_them_imports_no_torch() -> None:
    """The report's dashboard composes an entry's config without them (`optional`); train.py registers them
    before anything is refused, which costs no torch import (normbench.signatures reads the source)."""
    code = (
        "import sys; from hydra import compose, initialize_config_dir\n"
        f"with initialize_config_dir({str(CONF)!r}, version_base='1.3', job_name='train'):\n"
        "    cfg = compose('train', overrides=['experiment=small_batch'])\n"
        "assert 'eps' not in cfg.norm and cfg.experiment_name == 'small_batch'\n"
        "from normbench.cli.schemas import register_schemas\n"
        f"register_schemas({str(CONF)!r})\n"
        "assert not any(m.split('.')[0] in ('torch', 'lightning') for m in sys.modules), 'imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
