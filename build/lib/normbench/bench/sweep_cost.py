"""5. Sweep cost: wall time of ``python train.py -m <overrides>`` and where it goes, from each job's
``results.json`` timings: the process start (Python, Hydra) outside the jobs, and per job the imports,
data preparation, W&B start and finish, training, and evaluation."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from normbench.errors import NormbenchError
from normbench.run.train import DEFAULT_CONFIG_DIR

ROOT = DEFAULT_CONFIG_DIR.parent
#: what a job's results.json times, in the order a job goes through them
PHASES = ("imports", "data", "logger", "fit", "eval", "logger_finish")
TARGET_RUNS, TARGET_SECONDS = 40, 600.0
#: a job's seconds outside training (start, data, logger, evaluation, results): what a catalogue pays per run
TARGET_FIXED_S = 2.5


class SweepError(NormbenchError):
    """The benchmarked sweep failed."""


def default_sweep(quick: bool) -> list[str]:
    """The catalogue's small_batch entry where it exists, else an explicit sweep of the same shape;
    ``quick``: two short jobs of it (command-line values win over the entry's sweep)."""
    if (DEFAULT_CONFIG_DIR / "experiment" / "small_batch.yaml").is_file():
        base = ["experiment=small_batch"]
    else:
        base = ["norm=none,batch,batch_masked,layer,rms", "data.batch_size=2,8,32,128", "seed=0,1"]
        base += ["trainer.max_epochs=1"] if quick else ["++trainer.max_steps=100"]
    if quick:
        return [*base, "norm=layer,batch_masked", "data.batch_size=32", "seed=0", "++trainer.max_steps=5"]
    return base


def parallel_jobs(overrides: list[str]) -> int:
    """How many jobs the sweep's launcher runs at once (``hydra.launcher.n_jobs``; 1 for the basic launcher)."""
    values = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.launcher.n_jobs=")]
    return int(values[-1]) if values and values[-1].isdigit() else 1


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sweep(
    overrides: list[str], data_overrides: list[str], out_dir: Path
) -> tuple[float, float, list[dict[str, Any]]]:
    """Run the sweep in a subprocess into ``out_dir/sweep``; returns its wall and CPU seconds and the job
    records (on a busy machine the CPU seconds are the steadier figure)."""
    sweep_dir = out_dir / "sweep"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *overrides,
        *data_overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    start, cpu_start = time.perf_counter(), children_cpu_seconds()
    proc = subprocess.run(command, cwd=out_dir, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu_start
    (out_dir / "sweep.log").write_text(f"$ {' '.join(command)}\n{proc.stdout}\n{proc.stderr}")
    records = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/results.json"))]
    if proc.returncode != 0 or not records:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SweepError(f"sweep {' '.join(overrides)} exited {proc.returncode}: {tail} (log: {out_dir / 'sweep.log'})")
    return wall, cpu, records


def sweep_cost(overrides: list[str], data_overrides: list[str], out_dir: Path) -> tuple[list[dict], list[dict]]:
    """Two tables: the sweep against the target, and its wall time by phase."""
    wall, cpu, records = run_sweep(overrides, data_overrides, out_dir)
    runs = len(records)
    ok = sum(record.get("status") == "ok" for record in records)
    job_walls = [float(record["wall_time_s"]) for record in records]
    totals = {phase: sum(float(r.get("timings", {}).get(phase, 0.0)) for r in records) for phase in PHASES}
    totals["other (model, Trainer, results)"] = sum(job_walls) - sum(totals.values())
    workers = parallel_jobs(overrides)
    # with k jobs at a time the sweep had k x wall seconds of job slots; what the jobs did not fill is the
    # launcher's (Python and Hydra start, worker start-up, a slot idle at the end)
    totals["outside jobs (Python start, Hydra)"] = workers * wall - sum(job_walls)
    per_run = wall / runs
    meets = runs >= TARGET_RUNS and wall <= TARGET_SECONDS
    summary = [
        {
            "sweep": " ".join(overrides),
            "runs": runs,
            "ok": ok,
            "wall s": wall,
            "CPU s": cpu,
            "s per run": per_run,
            "40 runs at this rate s": TARGET_RUNS * per_run,
            "target": f"<= {TARGET_SECONDS:.0f} s for >= {TARGET_RUNS} runs",
            "met": "yes" if meets else ("no" if runs >= TARGET_RUNS else "n/a (fewer runs)"),
        }
    ]
    fixed = (workers * wall - totals["fit"]) / runs  # the job slots' seconds outside training, per run
    summary.append(
        {
            "sweep": "a job's fixed cost: everything but fit (the phases below)",
            "runs": runs,
            "ok": ok,
            "wall s": workers * wall - totals["fit"],
            "CPU s": "-",
            "s per run": fixed,
            "40 runs at this rate s": TARGET_RUNS * fixed,
            "target": f"<= {TARGET_FIXED_S} s per run",
            "met": "yes" if fixed <= TARGET_FIXED_S else "no",
        }
    )
    startup = ("outside jobs (Python start, Hydra)", "imports", "data", "logger", "logger_finish")
    phases = [
        {
            "phase": name if name not in PHASES else f"job: {name}",
            "kind": "start-up" if name in startup else ("training" if name == "fit" else "evaluation / other"),
            "total s": seconds,
            "share %": 100.0 * seconds / (workers * wall),
            "per run s": seconds / runs,
        }
        for name, seconds in totals.items()
    ]
    return summary, phases
