"""Every data task's size, lengths, padding share at its default batch size, and the CPU time of one epoch.

    python scripts/task_table.py [--tasks mr,shakespeare_char,listops,parity,recall] [--path ptb=/data/ptb ...]

One training epoch (no validation) of the default model on each task (a causal Transformer for language
modeling), with the task's default config; corpora that need a download read ``--path name=<dir>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose
from hydra.utils import instantiate

from normbench.cli.schemas import composing
from normbench.run.train import build_module

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_TASKS = "mr,shakespeare_char,listops,parity,recall"


def measure(task: str, path: str | None) -> dict:
    overrides = [f"data={task}"] + ([f"data.path={path}"] if path else [])
    with composing(CONF):
        cfg = compose("train", overrides=[*overrides, "model.causal=true"])
    L.seed_everything(0, verbose=False)
    dm = instantiate(cfg.data)
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup("fit")
    prepare = time.perf_counter() - start
    module = build_module(cfg, dm)  # the encoder and task exactly as train.py builds them
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=dm)
    stats = dm.stats()
    return stats | {
        "task_name": task,
        "batch_size": dm.batch_size,
        "steps": trainer.global_step,
        "epoch_s": time.perf_counter() - start,
        "epoch_cpu_s": time.process_time() - cpu,
        "prepare_s": prepare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=DEFAULT_TASKS)
    parser.add_argument("--path", action="append", default=[], help="name=<directory or file> for a corpus")
    args = parser.parse_args()
    paths = dict(p.split("=", 1) for p in args.path)
    rows = []
    for task in args.tasks.split(","):
        row = measure(task, paths.get(task))
        rows.append(row)
        print(f"{task}: {row['epoch_s']:.1f}s wall, {row['epoch_cpu_s']:.1f}s CPU, {row['steps']} steps", flush=True)
    print(f"\ntorch threads: {torch.get_num_threads()}")
    print(
        "| task | kind | train / val / test | mean / max length | padding share (train, batch size) "
        "| epoch: steps, wall s, CPU s |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        sizes = f"{r['num_train']} / {r['num_val']} / {r['num_test']}"
        print(
            f"| {r['task_name']} | {r['task']} | {sizes} | {r['mean_len']:.1f} / {r['max_len']} "
            f"| {r['train_padding_share']:.3f} ({r['batch_size']}) "
            f"| {r['steps']}, {r['epoch_s']:.1f}, {r['epoch_cpu_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
