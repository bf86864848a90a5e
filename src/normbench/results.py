"""The per-run record `results.json`: what the report reads, written so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
TRACKED_PACKAGES = ("torch", "lightning", "hydra-core", "torchmetrics", "tokenizers", "wandb", "normbench")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, then rename over the target (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """A job dir's results record, or None when it has none (yet) or it cannot be read."""
    try:
        record = json.loads((Path(run_dir) / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def failed_jobs(sweep_dir: Path) -> tuple[int, dict[str, str]]:
    """How many jobs under a multirun dir wrote results, and the error of each that failed, by job dir."""
    records = {path.parent: read_results(path.parent) for path in sorted(Path(sweep_dir).glob(f"**/{RESULTS_FILE}"))}
    failed = {
        str(job.relative_to(sweep_dir)): str(record.get("error"))
        for job, record in records.items()
        if record is not None and record.get("status") == "failed"
    }
    return len(records), failed


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the checkout the run came from (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextmanager
def timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    """Add the wall seconds of the block to ``timings[phase]`` (results.json ``timings``), so the cost of a
    run's start-up (imports, data, logger) can be told apart from its training and evaluation."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = round(timings.get(phase, 0.0) + time.perf_counter() - start, 3)
