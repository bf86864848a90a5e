"""Scaling out: GPU/precision checks, the DDP data split, DDP inside Hydra multirun, torch.compile, launchers.

The end-to-end tests run real DDP with 2 CPU processes (gloo) through the CLI."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli import ROOT, train
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write
from wandb_files import offline_run

from normbench.cli.schemas import composing
from normbench.data.sampling import ResumableRandomSampler
from normbench.errors import ConfigError
from normbench.models.compile import compile_encoder
from normbench.norm_factory import norm_factory
from normbench.run.ddp import ddp_job
from normbench.run.trainer import resolve_precision, trainer_config

TINY = [
    "model.d_model=32",
    "model.n_layers=1",
    "model.d_ff=64",
    "model.n_heads=2",
    "model.dropout=0",
    "data.vocab_size=300",
    "optim.lr=3e-3",
    "callbacks=none",
]
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


# --- precision and accelerator ----------------------------------------------------------------------


def test_precision_auto_is_bf16_where_the_gpu_has_it_else_16_and_32_on_cpu(monkeypatch) -> None:
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # explicit values are Lightning's
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "auto") == "32-true"


def test_gpu_trainer_without_a_gpu_is_refused_before_anything_runs(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"asks for a GPU \(trainer.accelerator=gpu\) but torch sees none .*trainer=cpu"
    ):
        trainer_config(OmegaConf.create({"accelerator": "gpu", "devices": 1, "precision": "auto"}))
    cpu = trainer_config(OmegaConf.create({"accelerator": "cpu", "devices": 2, "precision": "auto"}))
    assert cpu.precision == "32-true" and cpu.devices == 2


@pytest.mark.slow
def test_trainer_gpu_on_a_machine_without_gpu_exits_2_with_one_line(tmp_path: Path, mr_file: Path) -> None:
    args = ["trainer=gpu", "logger=none", f"data.path={mr_file}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = train(args, tmp_path, check=False, env={"CUDA_VISIBLE_DEVICES": ""})  # no GPU, whatever the machine
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: trainer=gpu asks for a GPU") and "torch sees none" in line, proc.stderr[-2000:]
    assert line.endswith("use trainer=cpu") and "Traceback" not in proc.stderr


def test_mixed_precision_trains_with_gradient_clipping_and_no_fused_optimizer() -> None:
    """scale=gpu's bf16-mixed with the default gradient clipping: Lightning refuses to clip a fused AdamW under
    mixed precision, so the optimizer is fused only in full precision (every scale=gpu run failed on it)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.randint(1, 50, (16, 6)), torch.ones(16, 6, dtype=torch.bool), torch.randint(0, 2, (16,)))
    batches = DataLoader(data, batch_size=8)
    for precision, fused in (("bf16-mixed", False), ("32-true", True)):
        module = _tiny_classifier("layer")
        trainer = L.Trainer(
            accelerator="cpu", precision=precision, gradient_clip_val=1.0, max_steps=2, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        before = module.encoder.embed.weight.detach().clone()
        trainer.fit(module, train_dataloaders=batches)
        assert trainer.global_step == 2 and not torch.equal(before, module.encoder.embed.weight)
        assert trainer.optimizers[0].defaults["fused"] is fused


def test_the_process_group_is_destroyed_at_exit_while_the_interpreter_is_whole(tmp_path: Path) -> None:
    """A gloo group left to the interpreter's finalization can abort the process (SIGABRT): every process of a
    job destroys its group from an atexit hook, registered once (the module's setup calls it)."""
    import subprocess

    script = f"""
import atexit
import torch.distributed as dist
from normbench.distributed import destroy_process_group_at_exit
dist.init_process_group("gloo", init_method="file://{tmp_path / "store"}", rank=0, world_size=1)
atexit.register(lambda: print("initialized at exit:", dist.is_initialized()))  # runs after the hook (LIFO)
destroy_process_group_at_exit()
destroy_process_group_at_exit()
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "initialized at exit: False" in proc.stdout, proc.stderr[-2000:]


# --- the DDP data split -----------------------------------------------------------------------------


def test_ddp_processes_together_take_the_single_process_batches_of_k_times_the_size() -> None:
    whole = ResumableRandomSampler(21, seed=3)
    ranks = [ResumableRandomSampler(21, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for epoch in range(2):
        for sampler in [whole, *ranks]:
            sampler.set_epoch(epoch)
        order, shards = list(whole), [list(s) for s in ranks]
        assert len(shards[0]) == len(shards[1]) == len(ranks[0]) == 10  # 21 cut to 20: equal steps per process
        for step in range(10 // 4):  # per-process batches of 4 <-> single-process batches of 8
            together = shards[0][4 * step : 4 * step + 4] + shards[1][4 * step : 4 * step + 4]
            assert sorted(together) == sorted(order[8 * step : 8 * step + 8])
    ranks[1].resume_at(1, 4)  # a resumed process skips the batches it had done, in its own shard
    assert list(ranks[1]) == shards[1][4:]


# --- DDP inside a Hydra multirun ----------------------------------------------------------------------


@pytest.fixture
def hydra_job(tmp_path: Path):
    """Make HydraConfig look as it does inside job 0 of a multirun with the given overrides."""

    def make(overrides: list[str]):
        with composing(ROOT / "conf"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.MULTIRUN
            cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "0")
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_in_a_multirun_lightnings_relaunch_runs_this_job_alone_in_its_dir(hydra_job, monkeypatch, tmp_path) -> None:
    from lightning.fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd

    job = ["norm=batch_masked", *DDP_CPU]
    cfg = hydra_job(job)
    sweep = ["train.py", "-m", "norm=batch_masked,layer", *DDP_CPU]
    monkeypatch.setattr(sys, "argv", sweep)
    for key in ("LOCAL_RANK", "MASTER_PORT", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    run_dir = HydraConfig.get().run.dir
    with ddp_job(cfg.trainer):
        command, _ = _hydra_subprocess_cmd(local_rank=1)  # what Lightning's launcher will start
        os.environ.update(LOCAL_RANK="0", MASTER_PORT="23456", WORLD_SIZE="2")  # as Lightning's launcher does
    job_dir = tmp_path / "sweep" / "0"
    # [python, script] or [python, -m, module], then exactly this job's overrides, in this job's dir
    assert command[-len(job) - 3 :] == [
        *job,
        f'hydra.run.dir="{job_dir}"',
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    assert len(command) <= 3 + len(job) + 3 and "norm=batch_masked,layer" not in command
    # afterwards the process is as it was, so the next job of the sweep launches its own processes
    assert sys.argv == sweep and HydraConfig.get().run.dir == run_dir
    assert not {"LOCAL_RANK", "MASTER_PORT", "WORLD_SIZE"} & set(os.environ)


def test_ddp_that_reruns_the_script_is_refused_under_a_launcher_that_cannot(hydra_job) -> None:
    cfg = hydra_job(["hydra/launcher=joblib", *DDP_CPU])
    refused = "trainer.strategy=ddp .* JoblibLauncher .* trainer.strategy=ddp_spawn"
    with pytest.raises(ConfigError, match=refused), ddp_job(cfg.trainer):
        pass
    spawn = hydra_job(["hydra/launcher=joblib", *DDP_CPU, "trainer.strategy=ddp_spawn"])
    argv, run_dir = list(sys.argv), HydraConfig.get().run.dir
    with ddp_job(spawn.trainer):  # spawned processes need no relaunch: the command line and run dir stay the sweep's
        assert sys.argv == argv and HydraConfig.get().run.dir == run_dir


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir())


def _entries(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_sync_train_the_model_one_process_trains_on_the_global_batch(
    mr_file: Path, tmp_path: Path
) -> None:
    """2 processes x batch 8 with norm.sync=true == 1 process x batch 16: same global batches, same statistics."""
    common = ["norm=batch_masked", *TINY, f"data.path={mr_file}", "trainer.max_epochs=4", "checkpoint.save_best=false"]
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    steps = 4 * (480 // 16)  # 600 fixture lines - 1 neutral, 80% train
    ckpt = [f"checkpoint.every_n_steps={steps}"]
    proc = train(
        [*common, *ckpt, *DDP_CPU, "data.batch_size=8", "norm.sync=true", f"hydra.run.dir={ddp_dir}"], tmp_path
    )
    train([*common, *ckpt, "data.batch_size=16", "logger=none", f"hydra.run.dir={single_dir}"], tmp_path)

    assert _entries(tmp_path) == {"cache", mr_file.name, "ddp", "single"}  # rank 1 made no dirs of its own
    assert _entries(ddp_dir) == {
        ".hydra",
        "checkpoints",
        "results.json",
        "wandb",
        "train.log",
        "train_ddp_process_1.log",
    }
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (ddp_dir / "train_ddp_process_1.log").read_text()
    results = json.loads((ddp_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["world_size"] == 2 and results["global_step"] == steps
    assert results["config"]["trainer"]["sync_batchnorm"] is True  # norm.sync is the one switch
    assert results["metrics"]["val/acc"] > 0.85, results["metrics"]  # chance is 0.5
    assert len([line for line in proc.stdout.splitlines() if line.startswith("normbench:")]) == 1
    (wandb_run,) = (ddp_dir / "wandb").glob("offline-run-*")  # logged once, by rank 0
    assert offline_run(wandb_run)["history"]["val/acc"] == pytest.approx(results["metrics"]["val/acc"])

    ddp = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    single = torch.load(single_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    compared = [k for k in single if k.endswith(("weight", "running_var"))]
    # Biases feeding a batch norm (and so the running means) are left out: batch norm cancels them, their
    # gradient is 0 up to rounding, and Adam turns that rounding noise into full-size steps in either run.
    assert len(compared) > 10
    for key in compared:
        torch.testing.assert_close(ddp[key], single[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.slow
def test_multirun_of_ddp_jobs_runs_each_jobs_processes_in_its_own_dir(mr_file: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "norm=batch_masked,layer", *DDP_CPU, *TINY, "data.batch_size=8", "trainer.max_epochs=1"]
    dirs = [f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]  # the overrides make too long a name
    proc = train([*args, f"data.path={mr_file}", *dirs, "checkpoint.every_n_steps=0"], tmp_path)

    assert _entries(tmp_path) == {"cache", mr_file.name, "sweep"}  # no second sweep from a relaunched child
    jobs = [job for job in _job_dirs(sweep) if job.name != "wandb"]  # sweep/wandb: links to the jobs' W&B runs
    progress = {"sweep_progress.json", ".sweep_progress.json.lock"}  # normbench.cli.sweep_progress, in the parent
    assert len(jobs) == 2 and _entries(sweep) == {"multirun.yaml", "wandb", *progress, *(j.name for j in jobs)}
    assert sorted(link.resolve().parents[1] for link in (sweep / "wandb").iterdir()) == jobs  # rank 0 only
    run_ids = set()
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "ok" and results["world_size"] == 2 and results["global_step"] == 480 // 16
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (job / "train_ddp_process_1.log").read_text()
        (wandb_run,) = (job / "wandb").glob("offline-run-*")
        run = offline_run(wandb_run)
        assert run["config"]["choices"]["norm"] == results["norm"]
        run_ids.add(run["id"])
    assert {json.loads((j / "results.json").read_text())["norm"] for j in jobs} == {"batch_masked", "layer"}
    assert len(run_ids) == 2
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("normbench: model=")]
    assert len(summaries) == 2  # one summary line per job, from rank 0 (the sweep's progress lines aside)


# --- launchers ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_joblib_launcher_runs_a_sweep_in_parallel_processes(mr_file: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # with loader workers (scale=gpu has 2): loky's own start method cannot pickle a loader
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "norm=layer,rms", *TINY, "logger=none"]
    args.append("data.num_workers=1")
    proc = train([*args, "trainer.max_epochs=1", f"data.path={mr_file}", f"hydra.sweep.dir={sweep}"], tmp_path)
    records = [json.loads((job / "results.json").read_text()) for job in _job_dirs(sweep)]
    assert sorted(r["norm"] for r in records) == ["layer", "rms"]
    assert all(r["status"] == "ok" for r in records)
    # both workers added their job to the one progress file; the per-job progress bars stay off
    progress = json.loads((sweep / "sweep_progress.json").read_text())
    assert (progress["total"], progress["done"], progress["failed"], progress["finished"]) == (2, 2, 0, True)
    assert sorted(progress["jobs"]) == sorted(job.name for job in _job_dirs(sweep))
    assert "sweep: 1/2 jobs done, 0 failed" in proc.stdout and "sweep: 2/2 jobs done, 0 failed" in proc.stdout
    assert "Epoch 0" not in proc.stdout + proc.stderr


# --- torch.compile ----------------------------------------------------------------------------------------


def _tiny_classifier(norm: str):
    from normbench.models.transformer import TransformerEncoder
    from normbench.run.task import SequenceClassifier

    torch.manual_seed(0)
    encoder = TransformerEncoder(50, norm_factory(norm), d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0)
    return SequenceClassifier(encoder, 2).train()


def test_unknown_compile_backend_is_one_line_error() -> None:
    with pytest.raises(
        ConfigError, match="model.compile='indutcor' is not a torch.compile backend; accepted: .*inductor"
    ):
        compile_encoder(_tiny_classifier("layer").encoder, "indutcor")


@pytest.mark.slow
def test_compiled_encoder_gives_the_eager_loss_gradients_and_running_statistics() -> None:
    """``aot_eager``: the graph capture and ahead-of-time autograd of torch.compile (where a norm's Python
    could go wrong), without inductor's kernel generation, which costs minutes on a CPU (README)."""
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(2, 50, (8, 12), generator=gen)
    mask = torch.arange(12)[None] < torch.tensor([12, 3, 7, 12, 5, 9, 2, 10])[:, None]
    target = torch.randint(0, 2, (8,), generator=gen)
    runs = []
    for option in (False, "aot_eager"):
        model = _tiny_classifier("batch_masked")
        compile_encoder(model.encoder, option)
        loss = F.cross_entropy(model(tokens, mask), target)
        loss.backward()
        runs.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers())))
    (eager_loss, eager_grads, eager_buffers), (loss, grads, buffers) = runs
    torch.testing.assert_close(loss, eager_loss, atol=1e-6, rtol=1e-6)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    for name, buffer in eager_buffers.items():  # running statistics updated inside the compiled graph
        torch.testing.assert_close(buffers[name], buffer, msg=name)
