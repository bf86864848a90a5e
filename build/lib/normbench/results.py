"""The per-run record `results.json`: what the report reads, written so a crash never leaves half a file."""

from __future__ import annotations

import json
import math
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


def strict_json(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None: strict JSON (RFC 8259) has no NaN, and parsers
    other than Python's reject the bare ``NaN`` that ``json.dump`` writes by default."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def _file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` gives every other file of the run (mkstemp's is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write strict JSON to a temp file in the same folder, then rename over the target (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "w") as handle:
            json.dump(strict_json(payload), handle, indent=2, sort_keys=False, default=str, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_earned(record: dict[str, Any]) -> None:
    """Raise unless the run earned its numbers: at least one optimizer step, and every final metric finite
    (a NaN that no callback stopped, e.g. with ``callbacks=none``, is a failed run, not a result)."""
    from normbench.errors import ConfigError, NonFiniteError

    if record.get("global_step") == 0:
        raise ConfigError(
            "trainer.max_epochs/trainer.max_steps/trainer.limit_train_batches gave 0 training steps, so the "
            "metrics would be the untrained model's; accepted: a budget of at least one step (check "
            "data.batch_size against the training set too)"
        )
    bad = {key: value for key, value in record.get("metrics", {}).items() if not math.isfinite(value)}
    if bad:
        listed = ", ".join(f"{key}={value}" for key, value in bad.items())
        raise NonFiniteError(
            f"non-finite metrics after training ({listed}; kept as null): the run failed; "
            "try a lower optim.lr or another norm"
        )


def read_json_record(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing, unreadable or not an object."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """A job dir's results record, or None when it has none (yet) or it cannot be read."""
    return read_json_record(Path(run_dir) / RESULTS_FILE)


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
