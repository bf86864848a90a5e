"""Resume after SIGKILL: a killed and resumed run ends where the uninterrupted run ends, to the last digit."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli import cli_env, command, train

pytestmark = pytest.mark.slow

ARGS = [
    "model=transformer",
    "norm=batch_masked",  # dropout and batch statistics: both must come back exactly
    "trainer.max_epochs=3",
    "data.batch_size=16",  # 30 batches an epoch on the fixture
    "data.vocab_size=300",
    "checkpoint.every_n_steps=7",  # mid-epoch checkpoints
    "logger=none",
]


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _kill_after_first_checkpoint(args: list[str], run_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(command(args), cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def test_killed_run_resumes_to_exactly_the_uninterrupted_metrics(mr_file: Path, tmp_path: Path) -> None:
    args = [*ARGS, f"data.path={mr_file}"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    train([*args, f"hydra.run.dir={full}"], tmp_path)
    _kill_after_first_checkpoint([*args, f"hydra.run.dir={killed}"], killed, tmp_path)
    assert not (killed / "results.json").exists()

    proc = train([*args, f"hydra.run.dir={killed}", "resume=true"], tmp_path)
    resumed, expected = _results(killed), _results(full)
    assert resumed["resumed_from"] == str(killed / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == expected["global_step"] == 90
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "val/acc_batch_stats", "probe/partner_dependence"):
        assert resumed["metrics"][key] == expected["metrics"][key], key
    assert "resuming from a checkpoint that ended before the epoch ended" not in proc.stderr

    again = train([*args, f"hydra.run.dir={killed}", "resume=true"], tmp_path)  # finished: kept, not retrained
    assert "finished earlier" in again.stdout and _results(killed) == resumed


def test_checkpoint_of_another_config_is_refused_naming_both(mr_file: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "a"
    train([*ARGS, f"data.path={mr_file}", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], tmp_path)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    args = [a for a in ARGS if not a.startswith("norm=")] + ["norm=layer", f"data.path={mr_file}"]
    proc = train([*args, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'b'}"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"error: checkpoint {ckpt} was trained with model=transformer norm=batch_masked data=mr, "
        "this run is model=transformer norm=layer data=mr (differs in norm, norm_config)"
    ) in proc.stderr

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    proc = train([*ARGS, f"data.path={mr_file}", f"ckpt_path={truncated}"], tmp_path, check=False)
    assert proc.returncode == 2 and f"error: checkpoint {truncated} cannot be read" in proc.stderr
