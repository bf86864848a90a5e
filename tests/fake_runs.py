"""Write Hydra job dirs as train.py leaves them (.hydra/*.yaml + results.json), without training."""

import json
from pathlib import Path
from typing import Any

import yaml

EXCLUDE_KEYS = ["data.path", "data.cache_dir", "logger.offline", "resume", "ckpt_path"]


def write_job(
    job_dir: Path,
    *,
    norm: str,
    seed: int,
    batch_size: int = 32,
    model: str = "transformer",
    experiment: str = "small_batch",
    metrics: dict[str, float] | None = None,
    instruments: dict[str, float] | None = None,
    series: dict[str, list[list[float]]] | None = None,
    data_stats: dict[str, float] | None = None,
    extra_overrides: dict[str, Any] | None = None,
    config_changes: dict[str, Any] | None = None,
    status: str | None = "ok",
    error: str | None = None,
    train_step_s: float | None = None,
    norm_kind: str | None = None,
    wall_time_s: float | None = None,
) -> Path:
    """One job dir; ``status=None`` leaves out results.json (a killed run); ``norm_kind`` as a run records it from
    its built network (a norm outside the package is placed by it alone)."""
    config: dict[str, Any] = {
        "data": {"name": "mr", "batch_size": batch_size, "path": f"/data/{experiment}.txt", "shuffle_seed": seed},
        "model": {"name": model, "d_model": 32},
        "norm": {"name": norm, **({"momentum": 0.1} if norm.startswith("batch") else {})},
        "optim": {"lr": 0.001},
        "logger": {},
        "seed": seed,
        "experiment_name": experiment,
    }
    for key, value in (config_changes or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    overrides = {"experiment": experiment, "norm": norm, "data.batch_size": batch_size, "seed": seed}
    overrides.update(extra_overrides or {})
    hydra = {
        "hydra": {
            "runtime": {
                "choices": {"data": "mr", "model": model, "norm": norm, "logger": "none", "hydra/launcher": "basic"}
            },
            "job": {"config": {"override_dirname": {"exclude_keys": EXCLUDE_KEYS}}},
        }
    }
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if status is None:
        return job_dir
    record: dict[str, Any] = {
        "status": status,
        "model": model,
        "norm": norm,
        "data": "mr",
        "batch_size": batch_size,
        "seed": seed,
        "experiment": experiment,
        "output_dir": str(job_dir),
        "wall_time_s": 10.0 + seed if wall_time_s is None else wall_time_s,
        "config": config,
        "git_commit": "abc123",
        **({"norm_kind": norm_kind} if norm_kind else {}),
    }
    if status == "ok":
        record.update(
            metrics=metrics or {},
            instruments=instruments or {},
            global_step=100,
            **({"train_step_s": train_step_s} if train_step_s is not None else {}),
            data_stats={"num_train": 480, "mean_len": 11.5, **(data_stats or {})},
        )
        if series:
            record["series"] = series
    else:
        record["error"] = error or "RuntimeError: boom"
    (job_dir / "results.json").write_text(json.dumps(record))
    return job_dir
