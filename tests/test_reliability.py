"""Runs that can be trusted and repeated, through the real CLI: determinism, a rebuilt tokenizer cache,
NaN/inf stops that keep the last good checkpoint, sweeps that lose nothing, no W&B key in any file."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from cli import ROOT, train
from test_bad_input import RECURRENT_BATCH_OF_ONE, error_lines

pytestmark = pytest.mark.slow

TINY_TRANSFORMER = ["model.d_model=32", "model.d_ff=64", "model.n_layers=1"]
TINY_LSTM = ["model=lstm", "model.hidden_size=32", "model.embed_dim=32"]
ONE_EPOCH = ["trainer.max_epochs=1", "data.batch_size=16", "data.vocab_size=300"]
EIGHT_STEPS = [*ONE_EPOCH, "++trainer.limit_train_batches=8"]


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_same_seed_gives_identical_metrics_and_a_corrupt_tokenizer_cache_is_rebuilt_identically(
    mr_file: Path, tmp_path: Path
) -> None:
    """Two processes with one seed and config agree to the last digit (dropout and batch statistics
    included); the second finds its tokenizer cache corrupted and rebuilds it, which changes nothing."""
    args = [*TINY_TRANSFORMER, "norm=batch_masked", *EIGHT_STEPS, "logger=none", f"data.path={mr_file}"]
    train([*args, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    (cached,) = (tmp_path / "cache" / "tokenizers").glob("*.json")
    built = cached.read_bytes()
    cached.write_bytes(built[: len(built) // 2])  # a half-written file

    proc = train([*args, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    train([*args, "seed=1", f"hydra.run.dir={tmp_path / 'c'}"], tmp_path)

    warning = f"[normbench.data.tokenizer][WARNING] - tokenizer cache {cached} is unreadable ("
    assert [line for line in proc.stdout.splitlines() if warning in line and line.endswith("; rebuilding it")]
    assert cached.read_bytes() == built
    a, b, c = (_results(tmp_path / name) for name in "abc")
    assert a["status"] == b["status"] == c["status"] == "ok"
    assert a["metrics"] == b["metrics"] and a["instruments"] == b["instruments"]
    assert a["metrics"]["val/loss"] != c["metrics"]["val/loss"]  # the seed does reach the run
    assert (a["seed"], c["seed"], a["config"]["seed"]) == (0, 1, 0)
    assert {"python", "torch", "lightning", "hydra-core", "normbench"} <= a["versions"].keys()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert a["git_commit"] == head.stdout.strip()


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _all_finite(checkpoint: dict) -> bool:
    return all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())


# a learning rate that blows the weights up within a few steps; a checkpoint after every step
DIVERGING = ["optim.lr=1e8", "checkpoint.every_n_steps=1", *TINY_TRANSFORMER, *ONE_EPOCH, "logger=none"]


def test_nan_loss_stops_naming_step_and_layer_and_keeps_the_last_good_checkpoint(mr_file: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = train([*DIVERGING, f"data.path={mr_file}", f"hydra.run.dir={run_dir}"], tmp_path, check=False)

    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    stop = re.fullmatch(
        r"error: non-finite loss \(nan\) at step (\d+) \(epoch 0, batch \1\): first non-finite output in layer "
        r"encoder\.\S+ \(\w+\); try a lower optim\.lr or another norm",
        line,
    )
    assert stop, line
    kept = _checkpoint(run_dir)
    assert kept["global_step"] == int(stop[1]) > 0 and _all_finite(kept)  # the state before the NaN step
    results = _results(run_dir)
    assert results["status"] == "failed" and results["error"] == "NonFiniteError: " + line.removeprefix("error: ")


def test_without_the_nan_guard_non_finite_weights_are_never_checkpointed(mr_file: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*DIVERGING, "callbacks=none", f"data.path={mr_file}", f"hydra.run.dir={run_dir}"]
    proc = train(args, tmp_path, check=False)

    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    stop = re.fullmatch(
        rf"error: non-finite weights in (\S+) after step (\d+) \(epoch 0\): not checkpointed, "
        rf"{re.escape(str(run_dir / 'checkpoints'))} keeps the last finite ones; try a lower optim\.lr or another norm",
        line,
    )
    assert stop, line
    kept = _checkpoint(run_dir)
    assert kept["global_step"] == int(stop[2]) - 1 and _all_finite(kept)
    assert _results(run_dir)["error"] == "NonFiniteError: " + line.removeprefix("error: ")


def test_a_failed_job_loses_nothing_in_a_sweep(mr_file: Path, tmp_path: Path) -> None:
    """The failing job runs first; the next one still runs, and each keeps its results.json."""
    sweep = tmp_path / "sweep"
    args = ["-m", "data.batch_size=1,16", *TINY_LSTM, "norm=batch_masked", "data.vocab_size=300", "logger=none"]
    args += ["callbacks=none", *(f"++trainer.limit_{stage}_batches=2" for stage in ("train", "val", "test"))]
    proc = train([*args, f"data.path={mr_file}", f"hydra.sweep.dir={sweep}"], tmp_path, check=False)

    (failed_dir,) = sweep.glob("0_*")
    (ok_dir,) = sweep.glob("1_*")
    failed, ok = _results(failed_dir), _results(ok_dir)
    assert failed["batch_size"] == 1 and ok["batch_size"] == 16
    assert ok["status"] == "ok" and 0.0 <= ok["metrics"]["test/acc"] <= 1.0
    assert failed["status"] == "failed" and failed["error"] == f"BatchStatisticsError: {RECURRENT_BATCH_OF_ONE}"
    assert f"normbench: job failed: {RECURRENT_BATCH_OF_ONE}" in proc.stdout.splitlines()
    assert "normbench: sweep: 2/2 jobs done, 1 failed, elapsed" in proc.stdout  # the sweep's progress line

    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == [
        f"error: 1 of 2 jobs in {sweep} failed (each has status failed and its error in its results.json; "
        f"the others completed): {failed_dir.name}: {failed['error']}"
    ]


def test_wandb_api_key_never_reaches_a_file_or_the_console(mr_file: Path, tmp_path: Path) -> None:
    key = "nbfake" + "0123456789abcdef" * 2 + "SECRET"  # 40 characters, like a real key
    run_dir = tmp_path / "run"
    args = [*TINY_TRANSFORMER, *EIGHT_STEPS, "logger=wandb", f"data.path={mr_file}", f"hydra.run.dir={run_dir}"]
    proc = train(args, tmp_path, env={"WANDB_API_KEY": key})

    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb")), "W&B did not write its offline run"
    assert any(p.parts[-2] == ".hydra" for p in files) and (run_dir / "results.json") in files
    leaks = [str(p) for p in files if key.encode() in p.read_bytes()]
    assert leaks == [] and key not in proc.stdout + proc.stderr
