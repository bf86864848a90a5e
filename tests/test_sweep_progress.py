"""The sweep-level progress line: the callback's hooks called as Hydra calls them, on a fake sweep with a
fake clock; the real joblib sweep is in test_scaling.py."""

import json
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from normbench.cli import sweep_progress
from normbench.cli.hydra_callbacks import SweepProgress

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def test_the_sweep_size_is_the_basic_sweepers_product_with_the_command_line_winning() -> None:
    params = {"model": "transformer,lstm", "norm": "none,batch,batch_masked,layer,rms", "seed": "0,1,2"}
    assert sweep_progress.sweep_size(params, []) == 2 * 5 * 3
    assert sweep_progress.sweep_size(params, ["norm=layer,rms", "data.batch_size=2,8,32,128"]) == 2 * 2 * 3 * 4
    assert sweep_progress.sweep_size(None, ["norm=layer", "optim.lr=1e-3"]) == 1
    assert sweep_progress.sweep_size(None, ["norm=glob(*)"]) is None  # only the sweeper can expand a glob


def _config(sweep: Path, job: str, params: dict | None = None, overrides: tuple[str, ...] = ()) -> object:
    hydra = {
        "mode": RunMode.MULTIRUN,
        "sweep": {"dir": str(sweep)},
        "runtime": {"output_dir": str(sweep / job)},
        "sweeper": {"_target_": BASIC_SWEEPER, "params": params},
        "overrides": {"task": list(overrides)},
    }
    return OmegaConf.create({"hydra": hydra})


def test_counts_failures_and_eta_from_the_pace_of_the_finished_jobs(tmp_path, monkeypatch, capsys) -> None:
    sweep = tmp_path / "sweep"
    clock = iter([100.0, 100.0, 110.0, 110.0, 130.0, 130.0, 160.0, 161.0])
    monkeypatch.setattr(time, "time", lambda: next(clock))
    callback = SweepProgress()
    callback.on_multirun_start(_config(sweep, "", {"seed": "0,1"}, ("norm=batch,layer",)))  # 4 jobs at t=100
    assert sweep_progress.read(sweep) == {
        "total": 4, "done": 0, "failed": 0, "started": 100.0, "finished": False, "jobs": {},
    }  # fmt: skip

    def job(name: str, status: JobStatus, result: str | None) -> dict:
        config = _config(sweep, name)
        callback.on_job_start(config)
        if result is not None:
            (sweep / name).mkdir(parents=True)
            (sweep / name / "results.json").write_text(json.dumps({"status": result}))
        callback.on_job_end(config, JobReturn(status=status))
        return sweep_progress.read(sweep)

    first = job("0_a", JobStatus.COMPLETED, "ok")  # 100 -> 110
    assert (first["done"], first["failed"], first["elapsed_s"], first["eta_s"]) == (1, 0, 10.0, 30.0)
    assert "sweep: 1/4 jobs done, 0 failed, elapsed 0:10, ETA 0:30" in capsys.readouterr().out
    # 110 -> 130: a user error ends the job without raising; its results.json says failed
    second = job("1_b", JobStatus.COMPLETED, "failed")
    assert (second["done"], second["failed"], second["elapsed_s"], second["eta_s"]) == (2, 1, 30.0, 30.0)
    third = job("2_c", JobStatus.FAILED, None)  # 130 -> 160: raised before writing results.json
    assert (third["done"], third["failed"], third["elapsed_s"], third["eta_s"]) == (3, 2, 60.0, 20.0)
    assert third["failed_jobs"] == ["1_b", "2_c"]
    assert third["jobs"]["1_b"] == {"status": "failed", "seconds": 20.0}
    assert third["mean_job_s"] == pytest.approx(20.0)
    capsys.readouterr()
    callback.on_multirun_end(_config(sweep, ""))  # t=161
    final = sweep_progress.read(sweep)
    assert final["finished"] and final["eta_s"] == 0.0 and final["elapsed_s"] == 61.0
    assert "sweep: 3/4 jobs done, 2 failed, elapsed 1:01, finished" in capsys.readouterr().out


def test_a_single_run_or_a_ddp_child_is_not_counted(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    config = _config(sweep, "0_a")
    config.hydra.mode = RunMode.RUN
    SweepProgress().on_job_end(config, JobReturn(status=JobStatus.COMPLETED))
    assert sweep_progress.read(sweep) is None


def test_clock_format() -> None:
    assert [sweep_progress.clock(s) for s in (0, 59.6, 61, 3600, 3725)] == [
        "0:00",
        "1:00",
        "1:01",
        "1:00:00",
        "1:02:05",
    ]
