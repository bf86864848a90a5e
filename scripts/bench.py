"""Benchmarks with side-by-side ratios: Lightning overhead, norm cost, recurrent cells, training throughput, MFU,
data pipeline, sweep cost, and (``--sections scaleout``) the step cost of DDP, synced statistics and compile.

    python scripts/bench.py [--quick] [--out outputs/bench] [--sections lightning,norms,recurrent,throughput,...]
                            [--device auto|cpu|cuda] [--threads 1] [--set key=value ...] [--sweep "overrides"]
                            [--large 64,512,1024] [--large-dtype float32|bfloat16] [--smoke]

Prints one Markdown table per measurement (``--format rich`` for rich tables) and writes them as CSV files and
``bench.json`` into ``--out``. Compared variants run in one process, interleaved round by round, so load from
other processes on the machine falls on both; medians over rounds, ratios as the median of per-round ratios.
On a CUDA machine the same command adds the GPU figures (bytes/s against memory bandwidth, MFU); ``--smoke`` makes
them on any device at tiny sizes, so a CPU checks that every column is produced (scripts/gpu_check.sh --dry).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from normbench.bench.data_rate import data_rate
from normbench.bench.gpu import memory_bandwidth
from normbench.bench.lightning_overhead import lightning_overhead
from normbench.bench.mfu import measure_mfu
from normbench.bench.norm_cost import add_bandwidth_share, norm_cost
from normbench.bench.recurrent import recurrent_cost
from normbench.bench.scaleout import step_cost
from normbench.bench.setup import compose_config, data_overrides, device_name, fixed_batches, pick_device
from normbench.bench.sweep_cost import default_sweep, sweep_cost
from normbench.bench.tables import Table, print_tables, targets_table, write_outputs
from normbench.bench.throughput import throughput
from normbench.bench.timing import clock_name, use_clock
from normbench.errors import ConfigError, NormbenchError
from normbench.models.rnn import CELLS
from normbench.norms import NORMS
from normbench.results import git_commit, library_versions
from normbench.run.train import DEFAULT_CONFIG_DIR, build_datamodule

SECTIONS = ("lightning", "norms", "recurrent", "throughput", "mfu", "data", "sweep", "scaleout")
#: scaleout starts one job per variant (4-5 per model, DDP processes among them): asked for by name only
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "scaleout")
#: GPU size for the bandwidth figure: [B, T, C] with the default data's padding pattern stretched to T
LARGE = (64, 512, 1024)
#: --smoke: the GPU-only cases at sizes a CPU runs in seconds (they check the code and the columns, not speed)
SMOKE_LARGE = (8, 64, 128)
SMOKE_MFU = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "vocab_size": 128}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``--quick`` (under 2 minutes on 2 CPU cores) or the full run."""

    lightning_steps: int = 30
    lightning_rounds: int = 5
    norm_rounds: int = 15
    norm_block_s: float = 0.05
    throughput_steps: int = 6
    throughput_rounds: int = 2
    throughput_norms: tuple[str, ...] = tuple(NORMS)
    data_batches: int = 30
    data_rounds: int = 3
    mfu_steps: int = 20
    warmup: int = 2
    models: tuple[str, ...] = ("transformer", "lstm", "gru")
    scaleout_models: tuple[str, ...] = ("transformer", "lstm")
    scaleout_steps: int = 60
    scaleout_compile: bool = True
    scaleout_batch: int = 32


QUICK = Plan(
    lightning_steps=8,
    lightning_rounds=2,
    norm_rounds=5,
    norm_block_s=0.02,
    throughput_steps=3,
    throughput_rounds=1,
    throughput_norms=("none", "batch_masked", "layer"),
    data_batches=5,
    data_rounds=2,
    mfu_steps=10,
    warmup=1,
    scaleout_models=("transformer",),
    scaleout_steps=12,
    scaleout_compile=False,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, rounds and norms (< 2 min on 2 CPU cores)")
    parser.add_argument("--out", default="outputs/bench", help="folder for the CSV files and bench.json")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads here (0: torch's default)")
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto", help="auto: CPU time on a CPU")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of every interleaved comparison (0: the plan's)")
    parser.add_argument("--models", default="", help="models for the throughput table (default transformer,lstm,gru)")
    parser.add_argument("--norms", default="", help="norms for the norm-cost and throughput tables (default: all)")
    parser.add_argument("--data", default="mr", help="datamodule configs (conf/data) for the data-pipeline table")
    parser.add_argument("--data-path", default=None, help="an MR-format file to use instead of the cached data")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (not the sweep)")
    parser.add_argument("--sweep", default=None, help="overrides of the timed `train.py -m` sweep (see README)")
    parser.add_argument("--format", choices=("markdown", "rich"), default="markdown")
    parser.add_argument("--large", default="", help="B,T,C of the norm-cost bandwidth case (default: 64,512,1024)")
    parser.add_argument("--large-dtype", choices=tuple(DTYPES), default="float32", help="dtype of that case")
    parser.add_argument(
        "--smoke", action="store_true", help="the GPU-only figures (bandwidth, MFU) on any device, at tiny sizes"
    )
    return parser.parse_args(argv)


def large_shape(args: argparse.Namespace) -> tuple[int, int, int]:
    """``--large`` as ``(B, T, C)``; without it :data:`LARGE` (:data:`SMOKE_LARGE` with ``--smoke``)."""
    if not args.large:
        return SMOKE_LARGE if args.smoke else LARGE
    parts = args.large.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--large={args.large!r} is malformed; accepted: three positive integers B,T,C")
    batch, length, channels = (int(p) for p in parts)
    return batch, length, channels


def stretched_lengths(lengths: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """The default data's padding pattern at another size: lengths scaled so the longest is ``length``, the
    batch's sequences repeated (or cut) to ``batch`` of them."""
    stretched = (lengths.float() * length / lengths.max()).round().clamp(min=1).long()
    return stretched.repeat(batch // len(stretched) + 1)[:batch]


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan = replace(
            plan,
            lightning_rounds=args.rounds,
            norm_rounds=args.rounds,
            throughput_rounds=args.rounds,
            data_rounds=args.rounds,
        )
    if args.models:
        plan = replace(plan, models=tuple(args.models.split(",")))
    if args.norms:
        plan = replace(plan, throughput_norms=tuple(args.norms.split(",")))
    return plan


def quiet() -> None:
    """Lightning's and torch's notices would bury the tables."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> list[Table]:
    plan = make_plan(args)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise NormbenchError(f"--sections has {unknown}; accepted: {', '.join(SECTIONS)}")
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_clock(args.clock if args.clock != "auto" else ("wall" if device.type == "cuda" else "cpu"))
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_ov, data_label = data_overrides(args.data_path, out_dir)
    overrides = [*data_ov, *args.set]
    cfg = compose_config(overrides)
    datamodule = build_datamodule(cfg)
    meta = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "device": device_name(device),
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
        "data": data_label,
        "overrides": overrides,
        "quick": args.quick,
        "smoke": args.smoke,
        "versions": library_versions(),
        "git_commit": git_commit(DEFAULT_CONFIG_DIR.parent),
    }
    note = (
        f"{meta['device']}; load average {meta['load_average_start']:.1f} on {meta['cpus']} cores at the start. "
        f"Times are {'process CPU time' if clock_name() == 'cpu' else 'wall-clock time'}, medians over rounds; "
        "a ratio is the median of per-round ratios of variants interleaved in one process."
    )
    tables: list[Table] = []
    names = [n for n in (args.norms.split(",") if args.norms else NORMS) if n]
    if "lightning" in sections:
        rows = lightning_overhead(cfg, datamodule, device, plan.lightning_steps, plan.warmup, plan.lightning_rounds)
        model, norm = (c._target_.rsplit(".", 1)[-1] for c in (cfg.model, cfg.norm))
        tables.append(Table("lightning_overhead", f"1. Lightning overhead ({model}, {norm})", rows, note))
    if "norms" in sections or "recurrent" in sections:  # both take the default data's first batch's padding
        lengths = next(iter(datamodule.train_dataloader()))[1].sum(1)
    if "norms" in sections:
        channels = int(cfg.model.get("d_model") or cfg.model.get("hidden_size"))
        bandwidth = device.type == "cuda" or args.smoke or bool(args.large)  # the large case: asked for, or a GPU
        rows = norm_cost(
            names, lengths, channels, overrides, device, plan.norm_rounds, plan.norm_block_s, bandwidth=bandwidth
        )
        if bandwidth:
            batch, length, channels_large = large_shape(args)
            rows += norm_cost(
                names,
                stretched_lengths(lengths, batch, length),
                channels_large,
                overrides,
                device,
                plan.norm_rounds,
                plan.norm_block_s,
                DTYPES[args.large_dtype],
                bandwidth,
            )
            peak, how = memory_bandwidth(device)
            add_bandwidth_share(rows, peak / 1e9)
            note_norms = f"{note} Memory bandwidth {peak / 1e9:.0f} GB/s ({how}); GB/s assumes 5 passes over x."
        else:
            note_norms = note
        tables.append(Table("norm_cost", "2. Norm cost: forward + backward vs the native kernel", rows, note_norms))
    if "recurrent" in sections:
        cells = [m for m in plan.models if m in CELLS] or list(CELLS)
        rows = recurrent_cost(cells, names, lengths, overrides, device, plan.norm_rounds, plan.norm_block_s)
        rec_note = (
            f"{note} The default data's first batch (its lengths), model=<cell> sizes; the reference is fed a "
            "pack_padded_sequence (packing and unpacking timed with it); the gradient is zero at padding."
        )
        if device.type == "cuda":  # cuDNN's RNNs may use TF32 by default where plain matmuls do not
            rec_note += (
                f" TF32: cuDNN {'allowed' if torch.backends.cudnn.allow_tf32 else 'off'}, other matmuls "
                f"{torch.get_float32_matmul_precision()} precision."
            )
        tables.append(Table("recurrent", "2b. Recurrent cells: forward + backward vs nn.LSTM / nn.GRU", rows, rec_note))
    if "throughput" in sections:
        batches = fixed_batches(datamodule, plan.throughput_steps, device)
        rows, method = throughput(
            list(plan.models),
            list(plan.throughput_norms),
            overrides,
            datamodule,
            batches,
            plan.warmup,
            plan.throughput_rounds,
            device,
        )
        tables.append(
            Table("throughput", "3. Training throughput (plain loop)", rows, f"{note} Peak memory: {method}.")
        )
    if "mfu" in sections and args.smoke:  # checks the code and the columns; no figure on a CPU
        mfu = measure_mfu(device, batch=2, seq_len=32, steps=2, warmup=1, sizes=SMOKE_MFU, compile=False)
        tables.append(Table("mfu", "3b. Model FLOPs utilisation (--smoke: tiny model, eager)", [mfu], note))
    elif "mfu" in sections and device.type == "cuda":
        mfu = measure_mfu(device, batch=8, seq_len=1024, steps=plan.mfu_steps, warmup=5)
        tables.append(Table("mfu", "3b. Model FLOPs utilisation", [mfu], note))
    if "data" in sections:
        rows = data_rate(args.data.split(","), overrides, device, plan.data_batches, plan.data_rounds)
        tables.append(Table("data_pipeline", "4. Data pipeline vs model consumption", rows, note))
    if "sweep" in sections:
        sweep = shlex.split(args.sweep) if args.sweep is not None else default_sweep(args.quick)
        shutil.rmtree(out_dir / "sweep", ignore_errors=True)
        summary, phases = sweep_cost(sweep, data_ov, out_dir)
        sweep_note = f"{note} `python train.py -m {' '.join(sweep)}` in a subprocess (log: {out_dir / 'sweep.log'})."
        tables.append(Table("sweep", "5. Sweep cost", summary, sweep_note))
        tables.append(Table("sweep_phases", "5b. Sweep wall time by phase", phases))
    if "scaleout" in sections:
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        models = list(plan.scaleout_models if not args.models else plan.models)
        steps, batch = plan.scaleout_steps, plan.scaleout_batch
        compiled = plan.scaleout_compile
        rows = step_cost(models, "batch_masked", steps, batch, accelerator, overrides, out_dir, compiled)
        scale_note = (
            f"{meta['device']}; wall-clock seconds of real `train.py` jobs ({accelerator}, one torch thread per "
            f"process), {steps} steps each: per step = the median interval between step ends; start-up = the rest "
            "of the job's fit time (launch, process group, compilation)."
        )
        tables.append(Table("scaleout", "6. Scale-out: step cost of DDP, norm.sync and compile", rows, scale_note))
    tables.append(targets_table(tables))
    meta["load_average_end"] = os.getloadavg()[0]
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_outputs(tables, meta, out_dir)
    return tables


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    start = time.perf_counter()
    try:
        tables = run(args)
    except NormbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print_tables(tables, args.format)
    print(f"bench: {time.perf_counter() - start:.0f} s; tables in {Path(args.out).resolve()}", flush=True)


if __name__ == "__main__":
    main()
