"""The experiment catalogue composes: every entry names itself, sweeps the norms side by side over >= 3
seeds, and builds its model; `scale=` presets layer over it."""

import re
from pathlib import Path

import pytest
from hydra import compose
from hydra.utils import get_class
from omegaconf import OmegaConf

from normbench.cli.dirnames import short_dirname
from normbench.cli.schemas import composing
from normbench.norm_factory import input_norm, norm_factory

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
PER_TOKEN, BATCH = {"layer", "rms"}, {"batch", "batch_masked", "batch_step", "power", "batch_renorm"}


def _sweep(cfg) -> dict[str, list[str]]:
    return {key: str(value).split(",") for key, value in cfg.hydra.sweeper.params.items()}


def _compose(*overrides: str):
    with composing(ROOT / "conf"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_the_catalogue_has_its_entries():
    expected = {"small_batch", "padding", "train_eval_gap", "length_extrapolation", "causal_leak", "ddp"}
    assert expected | {"batch_stat_fluctuation", "inference_batch_one"} <= set(EXPERIMENTS)


def test_the_sweep_dir_is_stated_once_from_the_experiment_name():
    """conf/train.yaml derives it: multirun/<date>/<time> for a plain sweep, multirun/<entry>/<date>_<time>
    for an entry's, and no entry file sets it again."""
    assert re.fullmatch(r"multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", _compose().hydra.sweep.dir)
    for name in EXPERIMENTS:
        text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert "dir:" not in text, name
        assert re.fullmatch(
            rf"multirun/{name}/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d", _compose(f"experiment={name}").hydra.sweep.dir
        )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_entry_sweeps_norms_side_by_side_over_seeds_and_builds_its_model(name: str):
    cfg = _compose(f"experiment={name}")
    assert cfg.experiment_name == name and name in cfg.hydra.sweep.dir
    params, whole = _sweep(cfg), _sweep(_compose(f"experiment={name}", "scale=gpu"))
    assert len(params["seed"]) >= 3 and len(whole["seed"]) >= 3
    norms = set(params.get("norm", [cfg.hydra.runtime.choices.norm]))
    entry_norms = set(whole.get("norm", [cfg.hydra.runtime.choices.norm]))
    # the whole entry measures the gap side by side; its CPU cut may keep the batch-statistic norm alone where
    # conf/entry_size/ says why the control adds nothing there (ddp, batch_stat_fluctuation)
    assert entry_norms & PER_TOKEN and entry_norms & BATCH and norms & BATCH, (entry_norms, norms)
    for norm in norms:
        job = _compose(f"experiment={name}", f"norm={norm}")
        model = OmegaConf.to_container(job.model, resolve=True)
        norm_config = OmegaConf.to_container(job.norm, resolve=True)
        model.pop("compile")  # a switch for train.py, not an encoder argument
        first = input_norm(norm_config, model.pop("input_batch_norm"))  # train.py's, from the same two switches
        numeric = job.data._target_.endswith("NumericSequenceDataModule")  # features through an input projection
        inputs = {"vocab_size": None, "num_features": 12} if numeric else {"vocab_size": 50}
        factory = norm_factory(norm_config)
        encoder = get_class(model.pop("_target_"))(norm=factory, input_norm=first, **inputs, **model)
        assert encoder.output_dim == model.get("d_model", model.get("hidden_size"))  # the configured width
        assert {type(m).__name__ for m in encoder.modules()} >= {type(factory(4)).__name__}
    # the CPU scale in epochs of data (small_batch: 24 quarter-epochs, early stopping ends most runs before);
    # input_scale's 10 epochs of a 216-case set are 130 steps, one epoch of the default task
    epochs = cfg.trainer.max_epochs * cfg.trainer.limit_train_batches
    assert epochs <= {"input_scale": 10, "small_batch": 6}.get(name, 4) and cfg.checkpoint.every_n_steps == 0


def test_entry_size_cuts_an_entry_at_cpu_scale_only():
    cpu, gpu = _compose("experiment=small_batch"), _compose("experiment=small_batch", "scale=gpu")
    assert cpu.trainer.limit_train_batches == 0.25 and gpu.trainer.limit_train_batches == 1.0
    assert cpu.trainer.max_steps == 6000 and gpu.trainer.max_steps == -1
    assert cpu.hydra.sweeper.params.norm == "batch_masked,layer" and "rms" in gpu.hydra.sweeper.params.norm
    assert cpu.early_stopping.patience == gpu.early_stopping.patience == 2  # the protocol binds both scales
    ddp = _sweep(_compose("experiment=ddp"))
    assert ddp["norm"] == ["batch_masked"] and ddp["norm.sync"] == ["false", "true"]
    assert _compose().trainer.limit_train_batches == 1.0 and _compose("scale=cpu").trainer.limit_train_batches == 1.0


def test_scale_none_returns_a_single_run_to_its_own_defaults():
    cfg = _compose("experiment=small_batch", "scale=none")
    default = _compose()
    assert cfg.trainer.max_epochs == default.trainer.max_epochs and cfg.model == default.model


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_scale_sets_the_model_size_of_every_entry_and_the_command_line_still_wins(name: str):
    cpu, gpu = _compose(f"experiment={name}"), _compose(f"experiment={name}", "scale=gpu")
    width = "d_model" if "d_model" in cpu.model else "hidden_size"
    assert cpu.model[width] == 64 and gpu.model[width] >= 256 and gpu.model._target_ == cpu.model._target_
    assert cpu.trainer.accelerator == "cpu" and gpu.trainer.accelerator == "gpu" and gpu.trainer.max_epochs > 1
    cpu_sweep, gpu_sweep = _sweep(cpu), _sweep(gpu)
    assert cpu_sweep.keys() == gpu_sweep.keys()
    for key, values in cpu_sweep.items():  # the CPU scale may cut a sweep (conf/entry_size/), never add to it,
        if key != "seed":  # but seeds: its small models are noisier, so it may need more of them for the same power
            assert set(values) <= set(gpu_sweep[key]), key
    if cpu.data.max_len is not None:  # classification snippets; a language model's windows are data.seq_len
        assert cpu.data.max_len <= gpu.data.max_len
    else:
        assert gpu.data.max_len is None and cpu.data.seq_len == gpu.data.seq_len
    assert _compose(f"experiment={name}", "scale=gpu", f"model.{width}=96").model[width] == 96


def test_a_long_override_list_names_its_job_dir_within_the_file_name_limit():
    assert short_dirname("norm=layer,seed=0") == "norm=layer,seed=0"
    long_value = short_dirname(f"norm=layer,seed=1,tags=[{'a' * 250},b]")
    assert long_value.startswith("norm=layer,seed=1,tags=#") and len(long_value) < 40
    many = ",".join(f"model.key{i}=value{i}" for i in range(40))
    short = short_dirname(many)
    assert len(short.encode()) == 240 and short != short_dirname(many + "1") and short.startswith("model.key0=value0,")
    # end to end: tests/test_report.py runs a sweep whose override list is longer than a file name may be


def _listed_instruments(name: str) -> list[str]:
    """The instruments an entry's defaults list names, or the entry it builds on (``- length_extrapolation``)."""
    text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
    match = re.search(r"^  - override /callbacks: \[([a-z_, ]*)\]", text, re.M)
    base = re.search(r"^  - ([a-z_]+)\s*(#.*)?$", text, re.M)
    if match is None and base is not None:
        return _listed_instruments(base.group(1))
    assert match, f"{name} lists no instruments"
    return [item.strip() for item in match.group(1).split(",")]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_entry_opts_in_to_the_instruments_it_lists_and_nothing_else(name: str):
    """An entry names its instruments in its defaults list (no switch-offs), and runs exactly those (at
    scale=none: a scale's entry_size may cut one for time, e.g. small_batch's train_eval_gap on CPU)."""
    listed = _listed_instruments(name)
    callbacks = _compose(f"experiment={name}", "scale=none").callbacks
    assert sorted(k for k, v in callbacks.items() if v is not None) == sorted(listed)
    assert all(callbacks[k]._target_.startswith("normbench.instruments.callbacks.") for k in listed)
    own = OmegaConf.load(ROOT / "conf" / "experiment" / f"{name}.yaml").get("callbacks") or {}
    assert all(value is not None for value in own.values()), f"{name} switches an instrument off"


def test_each_instrument_config_builds_the_class_that_declares_it():
    """conf/callbacks/<name>.yaml holds one instrument, whose class declares that name (metrics.Declared)."""
    from hydra.utils import get_class

    from normbench.instruments.callbacks import Instrument
    from normbench.instruments.metrics import INSTRUMENTS

    files = sorted(p.stem for p in (ROOT / "conf" / "callbacks").glob("*.yaml") if p.stem not in ("default", "none"))
    assert files == sorted(i.config for i in INSTRUMENTS)
    for name in files:
        node = OmegaConf.load(ROOT / "conf" / "callbacks" / f"{name}.yaml")
        assert [k for k in node if k != "defaults"] == [name]
        cls = get_class(node[name]._target_)
        if issubclass(cls, Instrument):
            assert cls.declared.config == name


def test_every_data_config_drops_a_last_training_batch_of_one_sequence_and_shuffles_by_the_seed():
    """The config's own loader defaults (normbench.cli.schemas), over the class's: drop_last true, the training
    order from the run's seed."""
    for path in sorted((ROOT / "conf" / "data").glob("*.yaml")):
        data = _compose(f"data={path.stem}", "seed=5").data
        assert (data.drop_last, data.shuffle_seed) == (True, 5), path.stem


def test_per_step_batch_norm_keeps_statistics_for_the_trained_length_of_either_task():
    """norm.max_steps follows a classification task's cut (data.max_len) and a language model's window
    (data.seq_len; its data.max_len is null), so per-step batch norm builds for both."""
    mr = _compose("norm=batch_step", "model=lstm", "data.max_len=16")
    lm = _compose("norm=batch_step", "model=lstm", "data=shakespeare_char", "data.seq_len=32")
    assert mr.norm.max_steps == 16 and lm.norm.max_steps == 32
    factory = norm_factory(OmegaConf.to_container(lm.norm, resolve=True))
    assert factory(8).max_steps == 32
