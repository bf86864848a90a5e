"""W&B as a user reads it, through W&B's own offline inspector (`wandb leet inspect`): one run per job across
a SIGKILL and `resume=true`, its summary equal to results.json, and a sweep's runs together in one W&B dir."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli import cli_env, command, train
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow

TINY = [
    *("model.d_model=32", "model.d_ff=64", "model.n_layers=1", "data.batch_size=16", "data.vocab_size=300"),
    *("++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2"),
]


def leet(path: Path, *options: str) -> str:
    """``wandb leet inspect`` on an offline run dir: its records (one JSON per line) or, with --summary, its state."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *options, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def history(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in leet(run_dir).splitlines() if line.startswith("{")]
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def assert_summary_is_results(summary: dict, results: dict) -> None:
    final = {**results["instruments"], **results["metrics"]}
    assert final and {k: summary.get(k) for k in final} == pytest.approx(final)


def _kill_after_a_write_past_the_checkpoint(args: list[str], run_dir: Path, tmp_path: Path) -> None:
    """SIGKILL the run once its first checkpoint exists and W&B has written its run file again since: steps
    past the checkpoint are then in the file (two writes since), and the resumed run trains them again."""
    proc = subprocess.Popen(command(args), cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.DEVNULL)
    last, deadline = run_dir / "checkpoints" / "last.ckpt", time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    for _ in range(2):  # the first write may hold only the rest of the checkpoint's own step
        size = log.stat().st_size
        while log.stat().st_size == size and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def test_killed_and_resumed_job_is_one_wandb_run_whose_steps_continue(mr_file: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "job"
    args = [
        *TINY,
        "norm=batch_masked",
        "callbacks=none",  # the instruments' summary is the sweep test's
        # 400 steps: the kill waits for the first checkpoint (step 10) and two W&B writes 0.2 s apart; a tiny model's
        # step takes a few ms, so with 60 steps a fast machine sometimes finished training before the kill (seen twice)
        "trainer.max_epochs=20",
        "++trainer.limit_train_batches=20",
        "trainer.log_every_n_steps=1",  # every step reaches W&B
        "checkpoint.every_n_steps=10",
        "logger.flush_every_s=0.2",
        f"data.path={mr_file}",
        f"hydra.run.dir={run_dir}",
    ]
    _kill_after_a_write_past_the_checkpoint(args, run_dir, tmp_path)
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    train([*args, "resume=true"], tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    steps_total = 20 * 20
    assert results["resumed_from"] and results["global_step"] == steps_total

    segments = sorted((run_dir / "wandb").glob("offline-run-*"))  # the killed start, then the resumed one
    assert [seg.name.rsplit("-", 1)[1] for seg in segments] == [run_id, run_id]
    killed, resumed = history(segments[0]), history(segments[1])
    rows = killed + resumed
    assert [row["_step"] for row in rows] == list(range(len(rows))), "W&B's _step goes on across the kill"

    def train_steps(rows: list[dict]) -> list[int]:
        return [row["trainer/global_step"] for row in rows if "train/loss_step" in row]

    assert train_steps(killed)[-1] >= 10, "the kill came after steps past the checkpoint (step 10), trained again"
    steps = train_steps(rows)
    assert steps == sorted(set(steps)) and steps[-1] == steps_total - 1, "each training step logged once, in order"
    # the resumed run logs from its checkpoint what the killed segment had not written: from the step after the
    # killed segment's last, or, where W&B's last write before the kill lagged behind the last checkpoint, from that
    # checkpoint (the README's limit: a SIGKILL loses the steps before the last checkpoint not yet written)
    first, killed_last = train_steps(resumed)[0], train_steps(killed)[-1]
    assert first == killed_last + 1 or (first % 10 == 0 and killed_last < first <= killed_last + 10), (
        first,
        killed_last,
    )
    assert train_steps(resumed) == list(range(first, steps_total))

    final = json.loads(leet(segments[-1], "--summary"))
    assert (final["run_id"], final["state"], final["exit_code"]) == (run_id, "finished", 0)
    assert_summary_is_results(final["summary"], results)


@pytest.fixture(scope="session")
def offline_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-job multirun (batch_masked, layer) of a causal Transformer logging every instrument at every step,
    with the catalogue's extra evaluations: the runs the W&B tests read (here and in test_dashboard)."""
    from conftest import write_mr_snippets

    from normbench.report.dashboard import compose_entry, entry_names

    tmp_path = tmp_path_factory.getbasetemp() / "offline_sweep"  # one dir: test_dashboard's import finds it made
    if (tmp_path / "sweep" / "wandb").is_dir():
        return tmp_path / "sweep"
    tmp_path.mkdir()
    data = write_mr_snippets(tmp_path / "mr.txt")
    configs = [compose_entry(name) for name in entry_names()]
    lengths = ",".join(map(str, sorted({n for c in configs for n in c.evaluate.lengths})))
    sizes = ",".join(map(str, sorted({n for c in configs for n in c.evaluate.batch_sizes})))
    pads = ",".join(map(str, sorted({n for c in configs for n in c.evaluate.pad_to})))
    args = [
        *("-m", "norm=batch_masked,layer", *TINY, "model.causal=true", "trainer.max_epochs=1"),
        *("++trainer.limit_train_batches=4", "trainer.log_every_n_steps=1", "callbacks.grad_norms.every_n_steps=1"),
        *("callbacks.batch_stat_fluctuation.every_n_steps=1", f"evaluate.lengths=[{lengths}]"),
        *(f"evaluate.batch_sizes=[{sizes}]", f"evaluate.pad_to=[{pads}]", f"data.path={data}"),
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    train(args, tmp_path)
    return tmp_path / "sweep"


def test_sweep_runs_share_one_wandb_dir_and_read_as_their_results_and_config(offline_sweep: Path) -> None:
    sweep = offline_sweep
    links = sorted((sweep / "wandb").iterdir())
    assert len(links) == 2 and all(link.is_symlink() for link in links)
    seen_norms = set()
    for link in links:
        job = link.resolve().parents[1]
        assert job.parent == sweep and link.resolve().parent == job / "wandb"
        results = json.loads((job / "results.json").read_text())
        run = json.loads(leet(link, "--summary"))
        assert run["run_id"] == (job / "wandb" / "run_id").read_text().strip() and run["state"] == "finished"
        assert "test/acc@len=16" in run["summary"]  # the extra evaluations reach W&B too
        assert_summary_is_results(run["summary"], results)

        hydra_config = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"), resolve=True)
        assert {k: run["config"][k] for k in hydra_config} == hydra_config
        choices = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
        assert run["config"]["choices"] == {k: v for k, v in choices.items() if v and not k.startswith("hydra")}
        norm = run["config"]["choices"]["norm"]
        seen_norms.add(norm)

        task_overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        fixed = {"model=transformer", f"norm={norm}", "data=mr", "batch_size=16", "seed=0"}
        assert set(run["tags"]) == fixed | {o for o in task_overrides if not o.startswith("data.path=")}
    assert seen_norms == {"batch_masked", "layer"}

    dry = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", *map(str, links)], capture_output=True, text=True
    )
    assert "Would sync 2 run(s)" in dry.stdout + dry.stderr
