"""Run the real CLI (`python train.py ...`) in a subprocess, isolated from the caller's W&B/Hydra settings."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env["NORMBENCH_CACHE"] = str(tmp_path / "cache")
    return env


def command(args: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def train(
    args: list[str], tmp_path: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``train.py args`` in ``tmp_path``; ``env`` adds to (or overrides) the isolated environment."""
    proc = subprocess.run(
        command(args), cwd=tmp_path, env={**cli_env(tmp_path), **(env or {})}, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
