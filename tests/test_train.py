"""End to end through the real CLI: `python train.py ...` in a subprocess, on a fixture file, W&B offline."""

import json
from pathlib import Path

import pytest
import yaml
from cli import train
from wandb_files import offline_run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

FAST = ["trainer.max_epochs=6", "data.batch_size=16", "data.vocab_size=300", "optim.lr=3e-3"]


def offline_runs(job_dir: Path) -> list[Path]:
    return sorted((job_dir / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_single_run_learns_and_writes_results_and_offline_wandb_run(model: str, mr_file: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = train(
        [f"model={model}", "norm=batch_masked", f"data.path={mr_file}", f"hydra.run.dir={run_dir}", *FAST], tmp_path
    )

    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert (results["model"], results["norm"], results["data"], results["batch_size"]) == (
        model,
        "batch_masked",
        "mr",
        16,
    )
    assert results["metrics"]["val/acc"] > 0.85, results["metrics"]  # chance is 0.5
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0 and results["global_step"] > 0
    timings = results["timings"]  # where the run's wall time went
    assert set(timings) == {"imports", "data", "logger", "fit", "eval", "logger_finish"}
    assert timings["fit"] > 0 and sum(timings.values()) <= results["wall_time_s"]
    assert 0 < results["train_step_s"] * results["global_step"] < timings["fit"]  # the median step, start-up apart
    assert results["config"]["norm"]["_target_"] == "normbench.norms.MaskedBatchNorm" and results["versions"]["torch"]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("normbench:")]
    assert len(summary) == 1 and f"model={model} norm=batch_masked batch_size=16 val/acc=" in summary[0]
    assert str(run_dir) in summary[0]

    (run_files,) = offline_runs(run_dir)
    run = offline_run(run_files)
    assert (run["project"], run["group"], run["job_type"], run["exit_code"]) == ("normbench", "default", "train", 0)
    assert set(run["tags"]) >= {f"model={model}", "norm=batch_masked", "batch_size=16", "data=mr"}
    assert {"data.batch_size=16", "optim.lr=3e-3"} <= set(run["tags"])  # every override, swept ones included
    assert not any(tag.startswith(("data.path=", "hydra.")) for tag in run["tags"])
    assert run["config"]["choices"]["norm"] == "batch_masked" and run["config"]["data"]["batch_size"] == 16
    assert run["history"]["val/acc"] == pytest.approx(results["metrics"]["val/acc"])
    assert run["history"]["test/acc"] == pytest.approx(results["metrics"]["test/acc"])


def test_multirun_gives_each_job_its_own_dir_results_and_wandb_run(mr_file: Path, tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "norm=batch,layer", "model=lstm,transformer", f"data.path={mr_file}", f"hydra.sweep.dir={sweep_dir}"]
    train([*args, "trainer.max_epochs=1", "data.batch_size=32"], tmp_path)

    job_dirs = sorted(p.parent for p in sweep_dir.glob("*/results.json"))
    assert len(job_dirs) == 4
    seen, run_ids = set(), set()
    for job_dir in job_dirs:
        results = json.loads((job_dir / "results.json").read_text())
        assert results["status"] == "ok" and results["output_dir"] == str(job_dir)
        seen.add((results["model"], results["norm"]))
        assert results["norm_kind"] == {"batch": "batch", "layer": "token"}[results["norm"]]
        (run_files,) = offline_runs(job_dir)
        run = offline_run(run_files)
        run_ids.add(run["id"])
        assert run["config"]["choices"]["norm"] == results["norm"] and f"model={results['model']}" in run["tags"]
        assert run["history"]["val/acc"] == pytest.approx(results["metrics"]["val/acc"])
    assert seen == {(m, n) for m in ("lstm", "transformer") for n in ("batch", "layer")}
    assert len(run_ids) == 4


def test_cfg_job_prints_the_composed_config(tmp_path: Path):
    proc = train(["--cfg", "job", "norm=rms", "model=gru", "data.batch_size=7"], tmp_path)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["norm"] == {
        "_target_": "normbench.norms.RMSNorm",
        "_partial_": True,
        "eps": 1e-6,
        "affine": True,
        "sync": False,
    }
    assert cfg["model"]["cell"] == "gru" and cfg["data"]["batch_size"] == 7
    assert cfg["logger"]["offline"] is True and cfg["logger"]["project"] == "normbench"


def test_csv_logger_and_no_logger(mr_file: Path, tmp_path: Path):
    run_dir = tmp_path / "csv"
    train(
        ["logger=csv", "model=gru", "norm=rms", f"data.path={mr_file}", f"hydra.run.dir={run_dir}", *FAST[:2]], tmp_path
    )
    (metrics_file,) = run_dir.glob("csv/*/metrics.csv")
    assert "val/acc" in metrics_file.read_text().splitlines()[0]
    assert not (run_dir / "wandb").exists()


def test_threads_option_sets_torch_threads_and_refuses_bad_values():
    import torch

    from normbench.errors import ConfigError
    from normbench.run.train import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)  # torch's default stays as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"threads=.* is out of range; accepted: null"):
            set_threads(bad)
