"""The CLI harness runs the tree it lives in, not whatever normbench is installed, from any working dir."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli import ROOT, cli_env


def test_subprocesses_import_normbench_from_this_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "src")  # relative: from tmp_path it would name nothing
    env = cli_env(tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT / "src")
    code = "import normbench, pathlib; print(pathlib.Path(normbench.__file__).resolve())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == ROOT / "src" / "normbench" / "__init__.py"
