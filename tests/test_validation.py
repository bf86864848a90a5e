"""Every value checked at start-up (normbench.run.validation), in-process: the composed config of a bad command line
is refused with exit code 2 and exactly one ``error:`` line naming the key, the value and what is accepted, and
good ones (Lightning's usual Trainer arguments, a user's ``_target_`` norm with its own arguments) pass.
tests/test_bad_input.py runs a representative few of the same through the real CLI."""

from __future__ import annotations

import functools
import json
import math
import os
import stat
from pathlib import Path

import pytest
from cli import ROOT
from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from normbench.cli.hydra_callbacks import check_no_finished_run
from normbench.cli.schemas import composing
from normbench.errors import ConfigError, NonFiniteError, instantiating, user_error, user_errors_as_one_line
from normbench.results import check_earned, write_json_atomic
from normbench.run.validation import check_override_keys, validate_config

CONF = ROOT / "conf"


@functools.cache
def _composed_groups(groups: tuple[str, ...]) -> DictConfig:
    with composing(CONF):
        return compose("train", list(groups))


def _composed(overrides: list[str]) -> dict:
    """The resolved config of a command line: its group choices composed by Hydra (once per set of choices),
    then its key overrides as Hydra parses their values (``abc`` a string, ``[0]`` a list, ``1.0`` a float)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = tuple(o.input_line for o in parsed if "." not in o.key_or_group and not o.is_add())
    config = _composed_groups(groups).copy()
    for override in parsed:
        if override.input_line not in groups:
            OmegaConf.update(config, override.key_or_group, override.value(), merge=False, force_add=True)
    return OmegaConf.to_container(config, resolve=True)


def _one_error_line(capsys: pytest.CaptureFixture, check) -> str:
    """Run ``check`` as train.py does: one ``error:`` line on stderr and exit code 2, no stack trace."""
    with pytest.raises(SystemExit) as stop, user_errors_as_one_line():
        check()
    out = capsys.readouterr()
    assert stop.value.code == 2
    assert "Traceback" not in out.err + out.out
    (line,) = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert out.err == line + "\n"
    return line.removeprefix("error: ")


ACCEPTED_POSITIVE_NUMBER = "a number > 0"
# (overrides, the message's start: key=value, what it says is accepted)
REFUSED = [
    # types
    (["optim.lr=abc"], "optim.lr='abc' is out of range", ACCEPTED_POSITIVE_NUMBER),
    (["seed=abc"], "seed='abc' is out of range", "an integer in [0, 4294967295]"),
    (["threads=abc"], "threads='abc' is out of range", "an integer >= 1 or null"),
    (["resume=maybe"], "resume='maybe' is out of range", "true or false"),
    (["data.batch_size=2.5"], "data.batch_size=2.5 is out of range", "an integer >= 1"),
    (["model.causal=yes"], "model.causal='yes' is out of range", "true or false"),
    (["checkpoint.save_best=1"], "checkpoint.save_best=1 is out of range", "true or false"),
    (["logger=wandb", "logger.offline=sometimes"], "logger.offline='sometimes' is out of range", "true or false"),
    # ranges
    (["seed=-1"], "seed=-1 is out of range", "an integer in [0, 4294967295]"),
    (["threads=0"], "threads=0 is out of range", "an integer >= 1 or null"),
    (["data.batch_size=0"], "data.batch_size=0 is out of range", "an integer >= 1"),
    (["data.max_len=0"], "data.max_len=0 is out of range", "an integer >= 1"),
    (["data.num_workers=-1"], "data.num_workers=-1 is out of range", "an integer >= 0"),
    (["data.vocab_size=2"], "data.vocab_size=2 is out of range", "an integer >= 3 or null"),
    (
        ["data.tokenizer=bytes"],
        "data.tokenizer='bytes' is out of range",
        "null, wordpiece, bpe, word, char, whitespace",
    ),
    (["data=parity", "data.spread=2"], "data.spread=2 is out of range", "a number in [0, 1]"),
    (["model.d_model=0"], "model.d_model=0 is out of range", "an integer >= 1"),
    (["model.dropout=1.0"], "model.dropout=1.0 is out of range", "a number in [0, 1)"),
    (["model.dropout=-0.1"], "model.dropout=-0.1 is out of range", "a number in [0, 1)"),
    (["model=lstm", "model.hidden_size=-1"], "model.hidden_size=-1 is out of range", "an integer >= 1"),
    (["model=gru", "model.num_layers=0"], "model.num_layers=0 is out of range", "an integer >= 1"),
    (["norm.eps=0"], "norm.eps=0 is out of range", ACCEPTED_POSITIVE_NUMBER),
    (["norm=batch", "norm.momentum=0"], "norm.momentum=0 is out of range", "a number in (0, 1]"),
    (["norm=batch_step", "norm.beyond=never"], "norm.beyond='never' is out of range", "last, error"),
    (["norm=batch_renorm", "norm.r_max=0.5"], "norm.r_max=0.5 is out of range", "a number >= 1"),
    (["norm=batch_renorm", "norm.warmup_steps=-1"], "norm.warmup_steps=-1 is out of range", "an integer >= 0"),
    (["norm=power", "norm.alpha_fwd=1.5"], "norm.alpha_fwd=1.5 is out of range", "a number in [0, 1]"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay=-0.1 is out of range", "a number >= 0"),
    (["optim.warmup=1"], "optim.warmup=1 is out of range", "a number in [0, 1)"),
    (["checkpoint.every_n_steps=-1"], "checkpoint.every_n_steps=-1 is out of range", "an integer >= 0"),
    (["evaluate.lengths=[0]"], "evaluate.lengths=[0] is out of range", "a list of integers >= 1"),
    (["evaluate.batch_sizes=[8,-2]"], "evaluate.batch_sizes=[8, -2] is out of range", "a list of integers >= 1"),
    (
        ["callbacks.batch_stat_fluctuation.every_n_steps=0"],
        "callbacks.batch_stat_fluctuation.every_n_steps=0 is out of range",
        "an integer >= 1",
    ),
    (
        ["callbacks.partner_dependence.partner_sets=1"],
        "callbacks.partner_dependence.partner_sets=1 is out of range",
        "an integer >= 2",
    ),
    # Lightning's Trainer arguments
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is out of range", "an integer >= 1 or -1 or null"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is out of range", "an integer >= 1 or -1"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 is out of range", "a share in (0, 1]"),
    (["trainer.limit_val_batches=1.5"], "trainer.limit_val_batches=1.5 is out of range", "a share in (0, 1]"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval=0 is out of range", "null, a share of an epoch"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is out of range", "an integer >= 1"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is out of range", "a number >= 0 or null"),
    (["trainer.gradient_clip_algorithm=clip"], "trainer.gradient_clip_algorithm='clip' is out of range", "norm, value"),
    (["trainer.num_sanity_val_steps=-2"], "trainer.num_sanity_val_steps=-2 is out of range", "an integer >= 0 or -1"),
    (["trainer.devices=0"], "trainer.devices=0 is out of range", "an integer >= 1, -1 (all), auto"),
    (["trainer.precision=foo"], "trainer.precision='foo' is out of range", "auto, transformer-engine"),
    (
        ["+trainer.max_step=5"],
        "trainer.max_step=5 is not a Lightning Trainer argument",
        "did you mean trainer.max_steps?",
    ),
    # cross-field rules
    (["model.n_heads=3"], "model.n_heads=3 is out of range", "a divisor of model.d_model=128"),
    (["norm=group", "norm.groups=3"], "norm.groups=3 is out of range", "a divisor of the model width 128"),
    (["data.split=[0.5,0.5,0.5]"], "data.split=[0.5, 0.5, 0.5] is out of range", "summing to 1"),
    (["data.split=[0.8,0.2]"], "data.split=[0.8, 0.2] is out of range", "three fractions (train, val, test)"),
    (["data=parity", "data.min_len=80"], "data.min_len=80 is out of range", "an integer <= data.max_len=64"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 is out of range", "-1 together with trainer.max_steps >= 1"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9] is out of range", "two numbers in [0, 1)"),
    (["data=shakespeare_char", "evaluate.pad_to=[128]"], "evaluate.pad_to=[128] is out of range", "an empty list"),
    (
        ["experiment=input_scale", "callbacks=none"],
        "callbacks.grad_norms={'every_n_steps': 1, 'depth': 1} is out of range",
        "the options of an instrument that is on (callbacks=none or a list without grad_norms turned it off",
    ),
]


@pytest.mark.parametrize(("overrides", "start", "accepted"), REFUSED, ids=[" ".join(case[0]) for case in REFUSED])
def test_a_bad_value_is_refused_at_start_up_in_one_line_naming_key_value_and_accepted(
    overrides: list[str], start: str, accepted: str, capsys: pytest.CaptureFixture
) -> None:
    config = _composed(overrides)
    line = _one_error_line(capsys, lambda: validate_config(config))
    assert line.startswith(start + ";") and accepted in line.split(";", 1)[1], line


UNKNOWN = [
    (["norm.epss=1e-3"], "norm.epss=0.001 is unknown: the config has no key norm.epss; did you mean norm.eps?"),
    (
        ["trainer.max_step=5"],
        "trainer.max_step=5 is unknown: the config has no key trainer.max_step; did you mean trainer.max_steps?",
    ),
    (["-m", "norm=layer,rms", "norm.epss=1"], "norm.epss=1 is unknown: the config has no key norm.epss; did you mean "),
    (["trainr.max_steps=5"], "trainr.max_steps=5 is unknown: the config has no key trainr.max_steps; did you mean t"),
    (  # no near key: the keys of the section are listed
        ["model=lstm", "model.d_model=64"],
        "model.d_model=64 is unknown: the config has no key model.d_model; accepted: model._target_, model.cell, ",
    ),
]


@pytest.mark.parametrize(("argv", "start"), UNKNOWN, ids=[" ".join(case[0]) for case in UNKNOWN])
def test_an_unknown_key_is_refused_before_hydra_naming_the_nearest_valid_one(
    argv: list[str], start: str, capsys: pytest.CaptureFixture
) -> None:
    line = _one_error_line(capsys, lambda: check_override_keys(argv, CONF))
    assert line.startswith(start) and line.endswith("adds a new key)"), line


ACCEPTED = [
    ["trainer.max_steps=5", "trainer.val_check_interval=0.5", "trainer.accumulate_grad_batches=2"],
    ["trainer.gradient_clip_val=null", "trainer.gradient_clip_algorithm=value", "trainer.check_val_every_n_epoch=2"],
    ["trainer.max_epochs=-1", "trainer.max_steps=10", "trainer.limit_train_batches=3", "trainer.devices=auto"],
    ["+trainer.benchmark=true", "trainer.precision=bf16-mixed", "evaluate.lengths=[24,96]"],
    # a user's own norm: its arguments are its own (here an eps no built-in norm accepts)
    ["norm=none", "+norm._target_=my.Norm", "+norm.eps=-1", "+norm.scale=[1,2]"],
    ["data=parity", "+data.input_transform=standardize", "+data.channel_scales=[1,100]"],
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(case) for case in ACCEPTED])
def test_what_users_expect_to_set_is_accepted(overrides: list[str]) -> None:
    check_override_keys(overrides, CONF)
    validate_config(_composed(overrides))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_shipped_option_passes_validation() -> None:
    """No rule refuses a value conf/ itself ships: each option of the model, norm, data and trainer groups
    merged into the default config (the LSTM's width for the norms), and each experiment at the CPU scale."""
    default = _composed_groups(())
    checked = 0
    for group, extra in (("model", ()), ("norm", ("model=lstm",)), ("data", ()), ("trainer", ())):
        base = _composed_groups(extra)
        for path in sorted((CONF / group).glob("*.yaml")):
            option = OmegaConf.load(path)
            option.pop("defaults", None)
            merged = base.copy()
            OmegaConf.set_struct(merged, False)
            merged[group] = option  # the option replaces the default's group, as a command line choosing it does
            validate_config(OmegaConf.to_container(merged, resolve=True))
            checked += 1
    experiments = [[f"experiment={e}", "scale=cpu"] for e in _options("experiment")] + [["scale=gpu"]]
    with composing(CONF):
        for overrides in experiments:
            validate_config(OmegaConf.to_container(compose("train", overrides), resolve=True))
    shipped = sum(len(_options(group)) for group in ("model", "norm", "data", "trainer"))
    assert checked == shipped >= 3 + 10 + 13 + 3 and len(experiments) == len(_options("experiment")) + 1 >= 9
    assert default.trainer.max_steps == -1


def _finished(run_dir: Path, status: str = "ok") -> bytes:
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"status": status, "metrics": {"val/acc": 0.75}}))
    return (run_dir / "results.json").read_bytes()


def test_a_dir_holding_a_finished_run_is_refused_unless_resuming(tmp_path: Path, capsys) -> None:
    before = _finished(tmp_path / "run")
    line = _one_error_line(capsys, lambda: check_no_finished_run(tmp_path / "run", "hydra.run.dir", False))
    assert line == (
        f"hydra.run.dir={tmp_path / 'run'} holds a finished run ({tmp_path / 'run' / 'results.json'}, status ok) "
        "that this run would overwrite; keep it and continue with resume=true, or choose another dir with "
        "hydra.run.dir=<dir>"
    )
    sweep_job = tmp_path / "sweep" / "3_norm=rms"
    _finished(sweep_job)
    line = _one_error_line(capsys, lambda: check_no_finished_run(tmp_path / "sweep", "hydra.sweep.dir", False, True))
    assert line.startswith(f"hydra.sweep.dir={tmp_path / 'sweep'} holds a finished run ({sweep_job / 'results.json'}")
    check_no_finished_run(tmp_path / "run", "hydra.run.dir", True)  # resume=true keeps and continues it
    check_no_finished_run(tmp_path / "sweep", "hydra.sweep.dir", False)  # only its job dirs hold runs
    _finished(tmp_path / "failed", status="failed")
    check_no_finished_run(tmp_path / "failed", "hydra.run.dir", False)  # a failed run may be run again
    check_no_finished_run(tmp_path / "new", "hydra.run.dir", False)
    assert (tmp_path / "run" / "results.json").read_bytes() == before and not (tmp_path / "new").exists()


def test_a_directory_is_refused_as_a_local_data_file(tmp_path: Path, capsys) -> None:
    config = _composed(["data=local", f"data.path={tmp_path}"])
    line = _one_error_line(capsys, lambda: validate_config(config))
    assert line == (
        f"data.path='{tmp_path}' is out of range; accepted: a file (.csv, .tsv, .jsonl, or plain text for language "
        "modeling), not a directory"
    )


def test_a_table_of_nul_bytes_is_refused_without_printing_them(tmp_path: Path) -> None:
    from normbench.data.local import read_table
    from normbench.errors import DataError

    (tmp_path / "nul.csv").write_bytes(b"\x00" * 4000)
    with pytest.raises(DataError) as refused:
        read_table(tmp_path / "nul.csv", "csv", "text", "label")
    assert str(refused.value) == (
        f"{tmp_path / 'nul.csv'}: not a text table (NUL bytes in its first line); "
        "accepted: a UTF-8 file with a header row"
    )
    (tmp_path / "wide.csv").write_text(",".join(f"c{i}" for i in range(30)) + "\n" + ",".join("x" * 30) + "\n")
    with pytest.raises(DataError) as refused:
        read_table(tmp_path / "wide.csv", "csv", "text", "label")
    assert str(refused.value).endswith("columns: " + ", ".join(f"c{i}" for i in range(20)) + " and 10 more")


def test_a_text_file_as_ckpt_path_is_refused_naming_the_option(tmp_path: Path, capsys) -> None:
    from normbench.run.checkpointing import check_checkpoint

    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    line = _one_error_line(capsys, lambda: check_checkpoint(tmp_path / "notes.txt", {}))
    assert line == (
        f"checkpoint {tmp_path / 'notes.txt'} cannot be read (UnpicklingError); it may be truncated or not a "
        "checkpoint; accepted as ckpt_path: a .ckpt file written by normbench"
    )


def test_a_stop_for_non_finite_weights_says_whether_a_checkpoint_is_kept(tmp_path: Path) -> None:
    from normbench.run.checkpointing import _what_is_kept

    assert _what_is_kept(tmp_path / "checkpoints") == "no earlier checkpoint was written, so none is kept"
    (tmp_path / "checkpoints").mkdir()
    assert _what_is_kept(tmp_path / "checkpoints") == "no earlier checkpoint was written, so none is kept"
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert _what_is_kept(tmp_path / "checkpoints") == f"{tmp_path / 'checkpoints'} keeps the last finite ones"


@pytest.mark.parametrize(
    ("record", "error", "message"),
    [
        ({"global_step": 0, "metrics": {"val/acc": 0.5}}, ConfigError, "gave 0 training steps"),
        ({"global_step": 7, "metrics": {"val/loss": math.nan, "val/acc": 0.5}}, NonFiniteError, "(val/loss=nan;"),
        ({"global_step": 7, "metrics": {"val/acc": 0.5, "test/loss": math.inf}}, NonFiniteError, "(test/loss=inf;"),
    ],
)
def test_zero_steps_or_a_non_finite_metric_fails_the_run(record: dict, error: type, message: str) -> None:
    with pytest.raises(error) as refused:
        check_earned(record)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    check_earned({"global_step": 1, "metrics": {"val/acc": 0.5, "val/loss": 0.7}})


def test_results_json_is_strict_json_at_the_mode_of_the_other_files(tmp_path: Path) -> None:
    record = {
        "metrics": {"val/loss": math.nan, "test/loss": -math.inf, "val/acc": 0.5},
        "series": {"a": [[1, math.inf]]},
    }
    write_json_atomic(tmp_path / "results.json", record)
    text = (tmp_path / "results.json").read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in results.json"))
    assert strict == {"metrics": {"val/loss": None, "test/loss": None, "val/acc": 0.5}, "series": {"a": [[1, None]]}}
    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "again.json", {"a": 1})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "again.json").stat().st_mode) == 0o644


def test_a_constructor_refusing_its_config_is_one_line_keeping_the_reason(capsys) -> None:
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    def build() -> None:
        with instantiating("trainer"):
            instantiate({"_target_": "lightning.pytorch.Trainer", "accelerator": "foo", "logger": False})

    line = _one_error_line(capsys, build)
    assert line.startswith("trainer: cannot build 'lightning.pytorch.trainer.trainer.Trainer' from this config: ")
    assert "ValueError: " in line
    assert "accelerator='foo'" in line and "Available names are: auto" in line
    refused = user_error(RuntimeError("fit failed").with_traceback(None))
    assert refused is None  # a plain bug stays a bug (a stack trace)
    wrapped = RuntimeError("in fit")
    wrapped.__cause__ = MisconfigurationException("`val_check_interval` (9) must be less than or equal to 4.\nSee")
    assert str(user_error(wrapped)) == (
        "Lightning refused the config: MisconfigurationException: `val_check_interval` (9) must be less than or "
        "equal to 4. See"
    )
    # a ValueError raised in Lightning's own code is a refusal; the same error raised elsewhere is a bug
    raiser = "def check():\n    raise ValueError('`val_check_interval` (9) must be less than or equal to 4.')\n"
    shown = {}
    for where in ("/env/site-packages/lightning/pytorch/loops/fit_loop.py", "/src/normbench/x.py"):
        namespace: dict = {}
        exec(compile(raiser, where, "exec"), namespace)
        with pytest.raises(ValueError) as caught:
            namespace["check"]()
        shown[where] = user_error(caught.value)
    assert str(shown["/env/site-packages/lightning/pytorch/loops/fit_loop.py"]) == (
        "Lightning refused the config: ValueError: `val_check_interval` (9) must be less than or equal to 4."
    )
    assert shown["/src/normbench/x.py"] is None
