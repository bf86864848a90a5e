"""Run the real CLI (`python train.py ...`) in a subprocess, isolated from the caller's W&B/Hydra settings."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without its W&B/Hydra settings, with this tree's ``src`` first on PYTHONPATH:
    the subprocess runs in ``tmp_path``, where a relative PYTHONPATH (or none) would import the installed
    normbench instead of the code under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env["NORMBENCH_CACHE"] = str(tmp_path / "cache")
    inherited = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(ROOT / "src"), *inherited]))
    return env


def command(args: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def train(
    args: list[str], tmp_path: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python train.py *args`` in ``tmp_path``; ``env`` adds to (or overrides) the isolated environment."""
    full_env = {**cli_env(tmp_path), **(env or {})}
    proc = subprocess.run(command(args), cwd=tmp_path, env=full_env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
