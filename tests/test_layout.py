"""The layout's promises: the report reads results.json without torch, and the torch-free table of norm
kinds is the norm classes' own."""

import subprocess
import sys
from pathlib import Path

from cli import cli_env
from fake_runs import write_job

from normbench.norm_factory import norm_factory
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
    """Records without ``norm_kind`` (written before it) name a built-in: the table must say what its class does.
    A norm added later needs no entry: its runs record their kind."""
    assert set(BUILT_IN) <= set(NORMS) and list(BUILT_IN) == [n for n in NORMS if n in BUILT_IN]
    for name, cls in NORMS.items():
        if name not in BUILT_IN:
            continue
        expected = "none" if issubclass(cls, NoNorm) else "batch" if cls.uses_batch_stats else "token"
        assert norm_kind(name) == BUILT_IN[name] == expected, name


def test_a_recorded_kind_wins_over_the_name():
    assert norm_kind("my_norm") == "other"
    assert norm_kind("my_norm", {"norm_kind": "batch"}) == "batch"
    assert norm_kind("input_batch", {"norm_kind": "none"}) == "none"


def test_a_run_records_what_its_network_normalizes_over():
    """results.json ``norm_kind`` from the built network: the input projection's batch norm is the input's."""
    from normbench.models.rnn import RecurrentEncoder
    from normbench.models.transformer import TransformerEncoder
    from normbench.norm_factory import input_norm
    from normbench.norms import network_norm_kind as recorded_kind

    def tiny(norm, **kw):
        return TransformerEncoder(
            None if kw else 10, norm_factory(norm), d_model=8, n_heads=2, n_layers=1, d_ff=8, **kw
        )

    assert recorded_kind(tiny("layer")) == "token" and recorded_kind(tiny("batch_masked")) == "batch"
    assert recorded_kind(tiny("none")) == "none"
    assert recorded_kind(tiny("none", num_features=3, input_norm=input_norm({}, model_switch=True))) == "none"
    assert recorded_kind(RecurrentEncoder(10, norm_factory("batch_step"), hidden_size=8, embed_dim=8)) == "batch"
