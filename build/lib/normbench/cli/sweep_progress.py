"""How far a multirun is: ``sweep_progress.json`` in the sweep dir and one line printed as each job ends.

Jobs may end in other processes (the joblib launcher's workers), so every update reads, changes and
rewrites the file under a file lock; the file itself is replaced atomically, so ``watch cat`` never sees
half of it. The ETA is the sweep's pace so far (elapsed / jobs done) times the jobs left, which holds
for jobs run one at a time and side by side alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from normbench.cli import job_list
from normbench.results import read_json_record, write_json_atomic

PROGRESS_FILE = "sweep_progress.json"


def sweep_size(
    sweeper_params: dict[str, Any] | None, task_overrides: Iterable[str], job_lines: Sequence[Sequence[str]] = ()
) -> int | None:
    """The number of jobs Hydra's basic sweeper makes of these ``hydra.sweeper.params`` and command-line
    overrides (the same parse and product as `BasicSweeper.sweep`), each crossed with ``job_lines`` where the
    sweeper is normbench's job list, or None where it cannot tell."""
    arguments = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(task_overrides)
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
        if job_lines:
            return len(job_list.jobs(overrides, job_lines))
        return len(BasicSweeper.split_arguments(overrides, None)[0])
    except Exception:  # a sweep kind only the sweeper resolves (glob over a group): the total stays unknown
        return None


def start(sweep_dir: Path, total: int | None, now: float | None = None) -> dict[str, Any]:
    """A fresh record for a sweep that starts now (a rerun of the same sweep dir starts its count anew)."""
    record = {
        "total": total,
        "done": 0,
        "failed": 0,
        "started": time.time() if now is None else now,
        "finished": False,
        "jobs": {},
    }
    with _lock(sweep_dir):
        _write(sweep_dir, record)
    return record


def job_ended(sweep_dir: Path, job: str, seconds: float, failed: bool, now: float | None = None) -> dict[str, Any]:
    """Count one ended job (``job``: its dir under the sweep dir) and return the updated record."""
    now = time.time() if now is None else now
    with _lock(sweep_dir):
        record = read(sweep_dir) or {"total": None, "started": now - seconds, "jobs": {}}
        record["jobs"][job] = {"status": "failed" if failed else "ok", "seconds": round(seconds, 3)}
        _summarise(record, now)
        _write(sweep_dir, record)
    return record


def finish(sweep_dir: Path, now: float | None = None) -> dict[str, Any] | None:
    with _lock(sweep_dir):
        record = read(sweep_dir)
        if record is None:
            return None
        _summarise(record, time.time() if now is None else now)
        record.update(finished=True, eta_s=0.0)
        _write(sweep_dir, record)
    return record


def read(sweep_dir: Path) -> dict[str, Any] | None:
    return read_json_record(Path(sweep_dir) / PROGRESS_FILE)


def _summarise(record: dict[str, Any], now: float) -> None:
    jobs = record["jobs"].values()
    done = len(record["jobs"])
    elapsed = max(0.0, now - record["started"])
    total = record.get("total")
    record.update(
        done=done,
        failed=sum(j["status"] == "failed" for j in jobs),
        failed_jobs=sorted(name for name, j in record["jobs"].items() if j["status"] == "failed"),
        elapsed_s=round(elapsed, 3),
        mean_job_s=round(sum(j["seconds"] for j in jobs) / done, 3) if done else None,
        eta_s=round(elapsed / done * max(0, total - done), 3) if done and total is not None else None,
    )


def line(record: dict[str, Any]) -> str:
    """``sweep: 13/60 jobs done, 1 failed, elapsed 4:12, ETA 15:30``."""
    total = record.get("total")
    parts = [
        f"sweep: {record.get('done', 0)}/{total if total is not None else '?'} jobs done",
        f"{record.get('failed', 0)} failed",
        f"elapsed {clock(record.get('elapsed_s', 0.0))}",
    ]
    if record.get("finished"):
        parts.append("finished")
    elif record.get("eta_s") is not None:
        parts.append(f"ETA {clock(record['eta_s'])}")
    return ", ".join(parts)


def clock(seconds: float) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _lock(sweep_dir: Path) -> FileLock:
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(sweep_dir) / f".{PROGRESS_FILE}.lock"))


def _write(sweep_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(sweep_dir) / PROGRESS_FILE, record)
