"""Run the default task once per model x norm, as a user would: wall time, accuracy, instruments.

    python scripts/default_matrix.py [--models transformer,lstm,gru] [--norms none,batch,...] [extra overrides]

Each run is its own `python train.py` process, so the wall time includes start-up (imports, W&B).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from normbench.instruments.metrics import HEADLINE

ROOT = Path(__file__).resolve().parents[1]
#: accuracy and the instruments' headline values (their declarations: normbench.instruments.metrics)
COLUMNS = ["val/acc", "test/acc", "val/acc_batch_stats", *HEADLINE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="transformer,lstm,gru")
    parser.add_argument("--norms", default="none,batch,batch_masked,layer,rms")
    parser.add_argument("--out", default="outputs/default_matrix")
    args, overrides = parser.parse_known_args()
    out = Path(args.out).resolve()
    rows = []
    for model in args.models.split(","):
        for norm in args.norms.split(","):
            run_dir = out / f"{model}-{norm}"
            shutil.rmtree(run_dir, ignore_errors=True)  # a re-measurement: train.py refuses a finished run's dir
            start, cpu_start = time.perf_counter(), _children_cpu_s()
            cmd = [sys.executable, str(ROOT / "train.py"), f"model={model}", f"norm={norm}", f"hydra.run.dir={run_dir}"]
            proc = subprocess.run(cmd + overrides, capture_output=True, text=True)
            wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu_start
            results_file = run_dir / "results.json"
            record = json.loads(results_file.read_text()) if results_file.exists() else {}
            metrics = {**record.get("instruments", {}), **record.get("metrics", {})}
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
            rows.append((model, norm, [metrics.get(k) for k in COLUMNS], wall, cpu, status))
            print(f"{model:12s} {norm:13s} val/acc={metrics.get('val/acc')} wall={wall:.1f}s {status}", flush=True)
    print("\n| model | norm | " + " | ".join(COLUMNS) + " | wall s (process) | CPU s | status |")
    print("|---" * (len(COLUMNS) + 5) + "|")
    for model, norm, values, wall, cpu, status in rows:
        cells = " | ".join(f"{v:.4f}" if v is not None else "-" for v in values)
        print(f"| {model} | {norm} | {cells} | {wall:.1f} | {cpu:.1f} | {status} |")


def _children_cpu_s() -> float:
    """User + system CPU seconds of finished child processes: a cost that other load on the machine
    inflates far less than it inflates wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
