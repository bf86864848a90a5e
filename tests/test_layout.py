"""The layout's promises: the report reads results.json without torch, and the torch-free table of norm
kinds is the norm classes' own."""

import subprocess
import sys
from pathlib import Path

from cli import cli_env
from fake_runs import write_job

from normbench.norm_kinds import BUILT_IN, norm_kind
from normbench.norms import NORMS, NoNorm

#: what an environment without torch looks like to an import: any of these raises ImportError
BLOCKED = ("torch", "lightning", "torchmetrics", "pytorch_lightning")

NO_TORCH = f"""
import importlib.abc, pkgutil, runpy, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is not installed here")

sys.meta_path.insert(0, NoTorch())
import normbench.report
for module in pkgutil.walk_packages(normbench.report.__path__, "normbench.report."):
    importlib.import_module(module.name)
sys.argv = ["python -m normbench.report", *sys.argv[1:]]
runpy.run_module("normbench.report", run_name="__main__")
"""


def test_the_report_imports_and_runs_without_torch(tmp_path: Path):
    sweep = tmp_path / "sweep"
    for index, (norm, seed) in enumerate((n, s) for n in ("batch", "layer") for s in (0, 1)):
        write_job(sweep / str(index), norm=norm, seed=seed, metrics={"val/acc": 0.5 + index / 20})
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(sweep)],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "report" / "summary.md").read_text().count("| batch") >= 1


def test_the_finder_blocks_torch(tmp_path: Path):
    """The check above would pass vacuously if the finder let torch through: importing the norms must fail."""
    code = NO_TORCH.split("import normbench.report")[0] + "import normbench.norms\n"
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode != 0 and "torch is not installed here" in proc.stderr


def test_the_norm_kinds_are_the_classes_own():
    assert list(BUILT_IN) == list(NORMS)
    for name, cls in NORMS.items():
        expected = "none" if issubclass(cls, NoNorm) else "batch" if cls.uses_batch_stats else "token"
        assert norm_kind(name) == BUILT_IN[name] == expected, name


def test_a_recorded_kind_wins_over_the_name():
    assert norm_kind("my_norm") == "other"
    assert norm_kind("my_norm", {"norm_kind": "batch_stats"}) == "batch"
    assert norm_kind("input_batch", {"norm_kind": "none"}) == "none"
