"""6. Scale-out cost: seconds per training step of real ``train.py`` jobs on one process and on two DDP
processes (gloo on CPU, NCCL on GPU) with local vs synced batch statistics (``norm.sync``), ``ddp`` vs
``ddp_spawn``, and ``torch.compile`` vs eager.

Each variant is one job of ``trainer.max_steps`` steps; its ``train_step_s`` (the median interval between
step ends, normbench.instruments.callbacks.StepTimer) is the cost of a step, and the rest of its ``fit`` time is the
start-up (process launch, process group, compilation).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from normbench.bench.sweep_cost import run_sweep

#: the fixed part of every job: one validation and test batch, no checkpoints, instruments or logger, one
#: torch thread per process
COMMON = [
    "logger=none",
    "callbacks=none",
    "checkpoint.every_n_steps=0",
    "checkpoint.save_best=false",
    "trainer.limit_val_batches=1",  # one batch: the run ends with trainer.validate, which needs one
    "trainer.limit_test_batches=1",
    "trainer.enable_model_summary=false",
    "threads=1",
    "hydra.sweep.subdir=${hydra.job.num}",  # the overrides make a job dir name longer than a file name may be
]
DDP = ["trainer=ddp", "trainer.devices=2"]


def variants(model: str, global_batch: int, accelerator: str, compile: bool = True) -> list[tuple[str, list[str]]]:
    """(label, overrides) per variant; the global batch is the same in all of them. ``compile`` adds the
    compiled Transformer (a minute of compilation on a CPU)."""
    one = [f"trainer.accelerator={accelerator}", f"data.batch_size={global_batch}"]
    two = [*DDP, f"trainer.accelerator={accelerator}", f"data.batch_size={global_batch // 2}"]
    rows = [
        ("1 process", one),
        ("ddp x2, local statistics", [*two, "norm.sync=false"]),
        ("ddp x2, norm.sync=true", [*two, "norm.sync=true"]),
        ("ddp_spawn x2, local statistics", [*two, "norm.sync=false", "trainer.strategy=ddp_spawn"]),
    ]
    if compile and model == "transformer":  # the recurrent cells are a Python loop over time steps: compile unrolls it
        rows.append(("1 process, model.compile=true", [*one, "model.compile=true"]))
    return rows


def step_cost(
    models: list[str],
    norm: str,
    steps: int,
    global_batch: int,
    accelerator: str,
    extra_overrides: list[str],
    out_dir: Path,
    compile: bool = True,
) -> list[dict[str, Any]]:
    """One row per model x variant: seconds per step, start-up seconds, and the ratio to one process;
    ``extra_overrides`` (data path, sizes) go to every job."""
    rows: list[dict[str, Any]] = []
    for model in models:
        baseline = None
        for label, overrides in variants(model, global_batch, accelerator, compile):
            run_dir = out_dir / "scaleout" / f"{model}-{label.replace(' ', '_').replace(',', '').replace('=', '-')}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            sweep = [f"model={model}", f"norm={norm}", *COMMON, *overrides, f"++trainer.max_steps={steps}"]
            _, _, (record,) = run_sweep(sweep, extra_overrides, run_dir)
            fit = float(record.get("timings", {}).get("fit", float("nan")))
            row: dict[str, Any] = {"model": model, "norm": norm, "variant": label, "global batch": global_batch}
            if record.get("status") != "ok":
                rows.append({**row, "fit s": fit, "status": f"failed: {record.get('error')}"})
                continue
            if not record.get("train_step_s"):
                # ddp_spawn trains in spawned processes: this process's Trainer (and its step timer) saw no step
                rows.append({**row, "fit s": fit, "status": "ok (steps in spawned processes: fit s only)"})
                continue
            per_step = float(record["train_step_s"])
            baseline = per_step if baseline is None else baseline
            rows.append(
                {
                    **row,
                    "fit s": fit,
                    "ms per step": 1000 * per_step,
                    "x 1 process": per_step / baseline,
                    "start-up s": fit - steps * per_step,
                    "status": "ok",
                }
            )
    return rows
