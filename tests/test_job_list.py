"""The job-list sweeper (``hydra/sweeper=job_list``): each line of a file is one job's overrides, crossed with the
command line's sweep, a line's keys replacing the sweep's; a real multirun with it; and its bad input."""

import json
import subprocess
from pathlib import Path

import pytest
from cli import ROOT, cli_env, command, train
from hydra.core.override_parser.overrides_parser import OverridesParser

from normbench.cli import job_list, sweep_progress

TINY = ["logger=none", "model.d_model=16", "model.d_ff=32", "model.n_layers=1", "data.vocab_size=200"]
TINY += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.batch_size=16"]


def _jobs(arguments: list[str], lines: list[list[str]]) -> list[list[str]]:
    return job_list.jobs(OverridesParser.create().parse_overrides(arguments), lines)


def test_each_line_is_crossed_with_the_sweep_in_the_files_order_and_replaces_the_sweeps_keys() -> None:
    # the experiment's sweep (norm, the grid, the seeds) and a user's launcher setting; two cells at their chosen rate
    arguments = ["norm=batch_masked,layer", "optim.lr=1e-3,3e-3", "seed=1,2,3", "data.batch_size=4"]
    lines = [["norm=layer", "optim.lr=0.003"], ["norm=batch_masked", "optim.lr=0.001", "data.batch_size=32"]]
    assert _jobs(arguments, lines) == [
        ["norm=layer", "optim.lr=0.003", f"seed={seed}", "data.batch_size=4"] for seed in (1, 2, 3)
    ] + [["norm=batch_masked", "optim.lr=0.001", f"seed={seed}", "data.batch_size=32"] for seed in (1, 2, 3)]
    # a line may sweep too, and a key only a line sets is added
    assert _jobs(["seed=0"], [["norm=layer,rms", "+extra=1"]]) == [
        ["seed=0", "norm=layer", "+extra=1"],
        ["seed=0", "norm=rms", "+extra=1"],
    ]
    assert sweep_progress.sweep_size({"norm": "batch,layer", "seed": "0,1,2"}, ["seed=1,2"], lines) == 2 * 2


def test_the_jobs_file_is_read_with_shell_quoting_and_blank_lines_skipped(tmp_path: Path) -> None:
    file = tmp_path / "jobs.txt"
    file.write_text("norm=layer optim.lr=0.003\n\n  \n'tags=[a b]' seed=1\n")
    assert job_list.read_lines(file) == [["norm=layer", "optim.lr=0.003"], ["tags=[a b]", "seed=1"]]


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        (
            "{tmp}/nope.txt",
            "hydra.sweeper.jobs={tmp}/nope.txt: no such file; accepted: a file of one job's overrides per line",
        ),
        ("{tmp}/empty.txt", "hydra.sweeper.jobs={tmp}/empty.txt: the file lists no job"),
        (None, "hydra.sweeper.jobs is not set; accepted: a file of one job's overrides per line"),
    ],
)
@pytest.mark.slow
def test_a_bad_jobs_file_is_one_line_and_exit_code_2(tmp_path: Path, jobs: str | None, message: str) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    given = [] if jobs is None else [f"hydra.sweeper.jobs={jobs.format(tmp=tmp_path)}"]
    proc = subprocess.run(
        command(["-m", "hydra/sweeper=job_list", *given, f"hydra.sweep.dir={tmp_path / 'sweep'}"]),
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        "error: " + message.format(tmp=tmp_path)
    ]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_job_list_multirun_runs_each_line_at_each_seed_with_the_lines_settings(mr_file: Path, tmp_path: Path) -> None:
    file = tmp_path / "cells.txt"
    file.write_text("norm=rms optim.lr=0.003\nnorm=layer optim.lr=0.001 data.batch_size=8\n")
    sweep = tmp_path / "sweep"
    train(
        ["-m", *TINY, "callbacks=none", f"data.path={mr_file}", "norm=batch,layer", "optim.lr=1e-2,1e-3", "seed=1,2"]
        + ["hydra/sweeper=job_list", f"hydra.sweeper.jobs={file}", f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    runs = sorted(
        (r["norm"], r["config"]["optim"]["lr"], r["batch_size"], r["seed"])
        for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))
    )
    assert runs == [("layer", 0.001, 8, 1), ("layer", 0.001, 8, 2), ("rms", 0.003, 16, 1), ("rms", 0.003, 16, 2)]
    assert sweep_progress.read(sweep)["total"] == 4


@pytest.mark.slow
def test_two_stage_runs_its_arms_in_one_first_stage_and_a_given_key_replaces_an_arms(
    mr_file: Path, tmp_path: Path
) -> None:
    """scripts/catalogue/two_stage.sh with ARMS (each model family its own grid in the catalogue): both arms' grids
    are stage 1's one multirun, the command line's data.batch_size=8 replaces the second arm's 4, and stage 2 runs
    each cell at its chosen rate for the later seed, in one multirun too."""
    out = tmp_path / "out"
    arms = "norm=layer optim.lr=1e-3,1e-2\nnorm=rms optim.lr=3e-3 data.batch_size=4\nnorm=layer optim.lr=1e-3,1e-2\n"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "catalogue" / "two_stage.sh"), "inference_batch_one", *TINY, f"data.path={mr_file}"]
        + ["seed=0,1", "data.batch_size=8", "evaluate.batch_sizes=[1]"],
        cwd=tmp_path,
        env={**cli_env(tmp_path), "ARMS": arms, "DIR": str(out)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "arms.txt").read_text() == "norm=layer optim.lr=1e-3,1e-2\nnorm=rms optim.lr=3e-3\n"  # once each

    def runs(stage: str) -> list[tuple]:
        records = (json.loads(p.read_text()) for p in (out / stage).glob("*/results.json"))
        return sorted((r["norm"], r["config"]["optim"]["lr"], r["batch_size"], r["seed"]) for r in records)

    assert runs("stage1") == [("layer", 0.001, 8, 0), ("layer", 0.01, 8, 0), ("rms", 0.003, 8, 0)]
    assert [r[0] for r in runs("stage2")] == ["layer", "rms"] and {r[2:] for r in runs("stage2")} == {(8, 1)}
    assert (out / "report" / "summary.md").is_file()
