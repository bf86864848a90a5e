"""6. Scale-out cost: seconds per training step of real ``train.py`` jobs on one process and on two DDP
processes (gloo on CPU, NCCL on GPU) with local vs synced batch statistics (``norm.sync``), ``ddp`` vs
``ddp_spawn``, and ``torch.compile`` vs eager.

Each variant runs as a two-job sweep, ``trainer.max_steps`` short and long; the difference of the two jobs'
``fit`` times over the difference of their steps is the cost of a step, free of the start-up (process
launch, process group, compilation), which is the rest of the short job's fit time.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from normbench.bench.sweep_cost import run_sweep

#: the fixed part of every job: no validation, checkpoints, instruments or logger, one torch thread per process
COMMON = [
    "logger=none",
    "callbacks=none",
    "checkpoint.every_n_steps=0",
    "checkpoint.save_best=false",
    "+trainer.limit_val_batches=0",
    "+trainer.limit_test_batches=1",
    "trainer.enable_model_summary=false",
    "threads=1",
]
DDP = ["trainer=ddp", "trainer.devices=2"]


def variants(model: str, global_batch: int, accelerator: str) -> list[tuple[str, list[str]]]:
    """(label, overrides) per variant; the global batch is the same in all of them."""
    one = [f"trainer.accelerator={accelerator}", f"data.batch_size={global_batch}"]
    two = [*DDP, f"trainer.accelerator={accelerator}", f"data.batch_size={global_batch // 2}"]
    rows = [
        ("1 process", one),
        ("ddp x2, local statistics", [*two, "norm.sync=false"]),
        ("ddp x2, norm.sync=true", [*two, "norm.sync=true"]),
        ("ddp_spawn x2, local statistics", [*two, "norm.sync=false", "trainer.strategy=ddp_spawn"]),
    ]
    if model == "transformer":  # the recurrent cells are a Python loop over time steps: compile unrolls it
        rows.append(("1 process, model.compile=true", [*one, "model.compile=true"]))
    return rows


def step_cost(
    models: list[str],
    norm: str,
    steps: tuple[int, int],
    global_batch: int,
    accelerator: str,
    data_overrides: list[str],
    out_dir: Path,
) -> list[dict[str, Any]]:
    """One row per model x variant: seconds per step, start-up seconds, and the ratio to one process."""
    short, long = steps
    rows: list[dict[str, Any]] = []
    for model in models:
        baseline = None
        for label, overrides in variants(model, global_batch, accelerator):
            run_dir = out_dir / "scaleout" / f"{model}-{label.replace(' ', '_').replace(',', '').replace('=', '-')}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            sweep = [f"model={model}", f"norm={norm}", *COMMON, *overrides, f"++trainer.max_steps={short},{long}"]
            _, _, records = run_sweep(sweep, data_overrides, run_dir)
            by_steps = {int(r["global_step"]): float(r["timings"]["fit"]) for r in records if r.get("status") == "ok"}
            if set(by_steps) != {short, long}:
                rows.append({"model": model, "variant": label, "status": f"jobs ended at steps {sorted(by_steps)}"})
                continue
            per_step = (by_steps[long] - by_steps[short]) / (long - short)
            baseline = per_step if baseline is None else baseline
            rows.append(
                {
                    "model": model,
                    "norm": norm,
                    "variant": label,
                    "global batch": global_batch,
                    "ms per step": 1000 * per_step,
                    "x 1 process": per_step / baseline,
                    "start-up s": by_steps[short] - short * per_step,
                    "status": "ok",
                }
            )
    return rows
