"""Bad input through the real CLI: exit code 2, exactly one ``error:`` line naming the bad value and the
accepted ones, no stack trace (unless ``HYDRA_FULL_ERROR=1``), and a failed run recorded in results.json."""

import json
from pathlib import Path

import pytest
from cli import ROOT, train

pytestmark = pytest.mark.slow

SMALL = ["logger=none", "callbacks=none", "model.d_model=32", "model.d_ff=64", "model.n_layers=1"]  # transformer
RECURRENT_BATCH_OF_ONE = (
    "batch norm inside a recurrent cell normalizes each time step over the batch, which needs at least 2 "
    "sequences per training batch, got 1: use data.batch_size >= 2 or a norm without batch statistics "
    "(norm=layer, norm=rms)"
)


def _options(group: str) -> str:
    return ", ".join(sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("args", "message", "recorded"),
    [
        (["norm=btach"], f"norm=btach is unknown; accepted: {_options('norm')}", None),
        (["-m", "norm=layer,btach"], f"norm=btach is unknown; accepted: {_options('norm')}", None),
        (["model=lstmm"], f"model=lstmm is unknown; accepted: {_options('model')}", None),
        (["data=imbd"], f"data=imbd is unknown; accepted: {_options('data')}", None),
        (["data.batch_size=0"], "data.batch_size=0 is out of range; accepted: an integer >= 1", "ConfigError"),
        (
            ["data.eval_batch_size=0"],
            "data.eval_batch_size=0 is out of range; accepted: null (the training batch size) or an integer >= 1",
            "ConfigError",
        ),
        (
            ["norm.epss=1e-3"],
            "norm.epss=0.001 is unknown: the config has no key norm.epss; did you mean norm.eps? "
            "(+norm.epss=... adds a new key)",
            None,
        ),
        (["data.max_len=0"], "data.max_len=0 is out of range; accepted: an integer >= 1 or null", "ConfigError"),
        (["data.path={tmp}/nope.txt"], "{tmp}/nope.txt: data file not found", "DataError"),
        (["data.path={tmp}/empty.txt"], "{tmp}/empty.txt: data file is empty", "DataError"),
        (
            ["model=lstm", "norm=batch_masked", "data.batch_size=1", "model.hidden_size=32"],
            RECURRENT_BATCH_OF_ONE,
            "BatchStatisticsError",
        ),
        (
            ["hydra.run.dir={tmp}/a_file/run"],
            "cannot write the output dir {tmp}/a_file/run ({tmp}/a_file: not a directory); "
            "choose another with hydra.run.dir=<dir>",
            None,
        ),
        (
            ["-m", "hydra.sweep.dir={tmp}/a_file/sweep", "norm=layer,rms"],
            "cannot write the output dir {tmp}/a_file/sweep ({tmp}/a_file: not a directory); "
            "choose another with hydra.sweep.dir=<dir>",
            None,
        ),
    ],
)
def test_bad_input_is_one_error_line_without_stack_trace(
    args: list[str], message: str, recorded: str | None, mr_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty.txt").write_bytes(b"\r\n")
    (tmp_path / "a_file").write_text("not a directory")
    earlier = _finished_run(tmp_path / "earlier")
    run_dir = tmp_path / "run"
    args = [a.format(tmp=tmp_path) for a in args]
    defaults = [f"data.path={mr_file}", f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    given = {a.split("=")[0] for a in args}
    small = SMALL[:2] if "model" in given else SMALL
    args = [*args, *small, *(d for d in defaults if d.split("=")[0] not in given)]  # -m first, as Hydra wants

    proc = train(args, tmp_path, check=False)

    assert proc.returncode == 2, proc.stderr[-2000:]
    assert error_lines(proc.stderr) == [f"error: {message.format(tmp=tmp_path)}"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _snapshot(tmp_path / "earlier") == earlier  # no earlier result changed
    results_file = run_dir / "results.json"
    if recorded is None:  # refused before any job started: nothing was created
        assert not run_dir.exists() and not (tmp_path / "sweep").exists()
    else:  # the run started: its failure is recorded
        results = json.loads(results_file.read_text())
        assert results["status"] == "failed"
        assert results["error"] == f"{recorded}: {message.format(tmp=tmp_path)}"


def _finished_run(run_dir: Path) -> dict[str, bytes]:
    """A finished run's files (as a run leaves them: results.json with status ok, its .hydra config)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / "results.json").write_text(json.dumps({"status": "ok", "metrics": {"val/acc": 0.75}}))
    return _snapshot(run_dir)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_run_into_the_dir_of_a_finished_run_is_refused_before_anything_is_written(
    mr_file: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    before = _finished_run(run_dir)
    proc = train(
        [*SMALL, f"data.path={mr_file}", f"hydra.run.dir={run_dir}", "data.batch_size=0"], tmp_path, check=False
    )

    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == [
        f"error: hydra.run.dir={run_dir} holds a finished run ({run_dir / 'results.json'}, status ok) that this run "
        "would overwrite; keep it and continue with resume=true, or choose another dir with hydra.run.dir=<dir>"
    ]
    assert _snapshot(run_dir) == before


def test_hydra_full_error_shows_the_stack_trace(mr_file: Path, tmp_path: Path) -> None:
    args = [*SMALL, f"data.path={mr_file}", f"hydra.run.dir={tmp_path / 'run'}", "data.max_len=0"]
    proc = train(args, tmp_path, check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0
    assert error_lines(proc.stderr) == ["error: data.max_len=0 is out of range; accepted: an integer >= 1 or null"]
    assert "Traceback (most recent call last)" in proc.stderr and "normbench.errors.ConfigError" in proc.stderr


def test_a_trainer_argument_lightning_refuses_only_in_fit_is_one_error_line(mr_file: Path, tmp_path: Path) -> None:
    """Lightning checks val_check_interval against the epoch inside fit, with a plain ValueError."""
    run_dir = tmp_path / "run"
    proc = train(
        [*SMALL, f"data.path={mr_file}", f"hydra.run.dir={run_dir}", "trainer.val_check_interval=100000"],
        tmp_path,
        check=False,
    )

    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    reason = "Lightning refused the config: ValueError: `val_check_interval` (100000) must be less than"
    assert [line[: len(reason) + 7] for line in error_lines(proc.stderr)] == [f"error: {reason}"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and results["error"].startswith(f"ConfigError: {reason}")
