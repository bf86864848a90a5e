"""norm=custom: a user's norm class by import path, checked at start-up; the README's example norm
(defined here, as a user would, not in the package) trains through train.py and scores on the scorecard."""

import csv
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from cli import ROOT, cli_env, train
from torch import nn

from normbench.custom_norm import CustomNorm
from normbench.errors import ConfigError
from normbench.instruments import probes, scorecard
from normbench.norm_factory import norm_factory
from normbench.report.scorecard import main as trained_scorecard

TESTS = Path(__file__).resolve().parent


# --- the README's example, word for word ------------------------------------------------------------


class DynamicTanh(nn.Module):
    """DyT (Zhu et al. 2025): weight * tanh(alpha * x) + bias, no statistics at all."""

    def __init__(self, num_features: int, alpha_init: float = 0.5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(alpha_init))
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


# --- classes that do not fit ------------------------------------------------------------------------


class NoMask(nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Pooled(nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x.mean(-1)  # one value per token instead of x's shape


class SequenceCentred(nn.Module):
    """Centres each sequence by its real tokens' mean: 0 / 0 on a sequence that is all padding."""

    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        weights = mask[..., None].to(x.dtype)
        return x - (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)


class TokensOnly(nn.Module):
    """Fine on [B, T, C], but breaks on a recurrent cell's single time step [B, C]."""

    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x - x.mean(1, keepdim=True).expand(x.shape[0], x.shape[1], x.shape[2])


class NoWidth(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x


class NotAModule:
    def __init__(self, num_features: int) -> None:
        pass


class RunningCentre(nn.Module):
    """A user's norm with running statistics of its own: a buffer that training updates."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.running_mean.lerp_(x[mask].mean(0), 0.5)
        return x - self.running_mean


class BatchCentred(nn.Module):
    """A user's batch-statistic norm: centres each channel by its mean over the batch's real tokens in training, by
    a running mean in eval mode, and says so (``uses_batch_stats``)."""

    uses_batch_stats = True

    def __init__(self, num_features: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x - self.running_mean
        mean = x[mask].mean(0)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
        return x - mean


def _target(cls: type) -> str:
    return f"{__name__}.{cls.__name__}"


def test_the_readme_example_is_this_files_class_word_for_word() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Bring your own norm") :]
    (example,) = re.findall(r"```python\n(.*?)```", section[: section.index("\n## ", 5)], re.S)
    import inspect

    assert inspect.getsource(DynamicTanh) in example
    assert f"norm._target_={'my_norms'}.DynamicTanh" in section  # the command the README gives


def test_custom_norm_is_built_with_its_options_and_adapted_to_the_interface() -> None:
    norm = norm_factory({"_target_": _target(DynamicTanh), "name": None, "sync": False, "alpha_init": 0.7})(8)
    assert isinstance(norm, CustomNorm) and isinstance(norm.inner, DynamicTanh)
    assert norm.label == "DynamicTanh" and float(norm.inner.alpha.detach()) == pytest.approx(0.7)
    assert (norm.uses_batch_stats, norm.per_token) == (False, True)  # nothing declared: per-token
    x = torch.randn(3, 5, 8)
    expected = norm.inner.weight * torch.tanh(0.7 * x) + norm.inner.bias
    torch.testing.assert_close(norm(x, None), expected)  # mask=None (no padding) reaches it as a mask
    torch.testing.assert_close(norm(x[:, 0], torch.ones(3, dtype=torch.bool), step=4), expected[:, 0])


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (NoMask, "forward(x: torch.Tensor) -> torch.Tensor cannot be called as forward(x, mask)"),
        (Pooled, "forward(x[4, 6, 8], mask[4, 6]) returned shape [4, 6]; accepted: x's shape [4, 6, 8]"),
        (SequenceCentred, "NaN/inf output at padding positions in training mode for a batch with an all-padding row"),
        (TokensOnly, "forward(x[4, 8], mask[4]) raised IndexError"),
        (NoWidth, "NoWidth(num_features, **options) failed"),
        (NotAModule, "accepted: a torch.nn.Module class"),
    ],
)
def test_a_class_that_does_not_fit_is_refused_in_one_line_naming_what_is_missing(cls: type, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        norm_factory({"_target_": _target(cls), "name": None, "sync": False})(8)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"norm._target_={_target(cls)}")


def test_a_missing_target_an_unimportable_one_and_an_unknown_option_are_refused() -> None:
    for options, message in [
        ({"_target_": "???"}, "norm=custom needs norm._target_=<module>.<Class>"),
        ({"_target_": "no_such_module.Norm"}, "cannot be imported (ModuleNotFoundError"),
        ({"_target_": _target(DynamicTanh), "alpha": 1.0}, "accepted: __init__(num_features, alpha_init)"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            norm_factory(options)(8)


def _user_env() -> dict[str, str]:
    """The user's module on the Python path, as a user puts their package there."""
    return {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def test_a_bad_class_stops_the_scorecard_before_any_data_with_one_line(capsys) -> None:
    """The same start-up check as train.py's (``check_before_data``), through the scorecard's command line."""
    with pytest.raises(SystemExit) as exit_info:
        scorecard.main(["norm=custom", f"norm._target_={_target(Pooled)}", "model=lstm", "data.path=/nonexistent"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: norm._target_={_target(Pooled)} does not fit the norm interface: forward(x[4, 6,")
    assert "returned shape [4, 6]; accepted: x's shape [4, 6, 128]" in line  # model.hidden_size: the LSTM's width


@pytest.mark.slow
def test_the_readme_norm_trains_through_train_py_with_every_instrument(mr_file: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["norm=custom", f"norm._target_={_target(DynamicTanh)}", "+norm.alpha_init=0.7", "model=lstm"]
    args += [f"data.path={mr_file}", "data.vocab_size=200", "data.batch_size=16", "model.hidden_size=16"]
    args += ["model.embed_dim=16", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "logger=none", "threads=1"]
    train([*args, f"hydra.run.dir={run_dir}", "checkpoint.every_n_steps=0"], tmp_path, env=_user_env())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["norm"] == "DynamicTanh" and results["global_step"] == 4
    assert results["norm_kind"] == "token"  # what places it among the per-token norms in the report
    expected_norm = {
        "_target_": _target(DynamicTanh),
        "_partial_": True,
        "name": None,
        "sync": False,
        "alpha_init": 0.7,
    }
    assert results["config"]["norm"] == expected_norm
    instruments = results["instruments"]  # a per-token norm: no partner dependence, no leak, no train/eval gap
    assert instruments["probe/partner_dependence"] == 0.0 and instruments["probe/causal_leak"] == 0.0
    assert instruments["val/train_eval_gap"] == 0.0 and "stats/var_dist" not in instruments


def test_the_readme_norm_from_a_users_own_yaml_passes_the_probe_scorecard(mr_file: Path, tmp_path: Path) -> None:
    user_conf = tmp_path / "my_conf"
    (user_conf / "norm").mkdir(parents=True)
    (user_conf / "norm" / "dyt.yaml").write_text(f"_target_: {_target(DynamicTanh)}\nname: dyt\nalpha_init: 0.5\n")
    data = [f"data.path={mr_file}", f"data.cache_dir={tmp_path / 'cache'}", "data.vocab_size=200", "data.max_len=24"]
    scores = scorecard.run(
        [f"hydra.searchpath=[file://{user_conf}]", "norm=dyt", "model=lstm", "model.hidden_size=16", *data],
        scorecard.Settings(warmup_batches=3, distributed=True),
        ROOT / "conf",
    )
    by_property = {s.property: s for s in scores}
    assert {s.norm for s in scores} == {"dyt"} and set(by_property) == {p.key for p in scorecard.PROPERTIES}
    for key in ("partner", "causal", "padding", "train_eval", "length"):
        assert (by_property[key].value, by_property[key].status) == (0.0, "pass"), key
    assert by_property["batch_one"].status == "pass" and by_property["batch_one"].value <= scorecard.TOLERANCE
    assert (by_property["distributed"].status, by_property["distributed"].why) == ("n/a", "per-token")


def test_probes_leave_a_users_running_statistics_as_they_were_and_a_warm_up_moves_them() -> None:
    norm = norm_factory({"_target_": _target(RunningCentre)})(4).eval()
    x, mask = torch.randn(3, 5, 4) + 2.0, torch.ones(3, 5, dtype=torch.bool)
    with probes.batch_statistics_mode(norm):
        norm(x, mask)
        assert norm.inner.running_mean.abs().sum() > 0  # it did update, in train mode
    assert torch.equal(norm.inner.running_mean, torch.zeros(4)) and not norm.training
    probes.warm_up_statistics(norm, [(x, mask)])
    torch.testing.assert_close(norm.inner.running_mean, x.mean((0, 1)) * 0.5)


@pytest.mark.slow
def test_a_users_norm_goes_through_all_sh_a_tiny_sweep_and_report_into_the_trained_scorecard(
    mr_file: Path, tmp_path: Path
) -> None:
    """scripts/catalogue/all.sh on one entry (inference_batch_one's recipe: a learning-rate grid on seed 0, seed 1
    at each norm's chosen rate, the report), a user's batch-statistic norm from its own yaml, layer norm added;
    the table's effect computed here by hand from the runs' results.json."""
    user_conf = tmp_path / "my_conf"
    (user_conf / "norm").mkdir(parents=True)
    (user_conf / "norm" / "centred.yaml").write_text(
        f"_target_: {_target(BatchCentred)}\n_partial_: true\nsync: false\n"
    )
    out = tmp_path / "catalogue"
    tiny = [f"data.path={mr_file}", f"data.cache_dir={tmp_path / 'cache'}", "data.vocab_size=200", "model.d_model=16"]
    tiny += ["model.d_ff=32", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "logger=none"]
    proc = subprocess.run(
        [str(ROOT / "scripts" / "catalogue" / "all.sh"), f"hydra.searchpath=[file://{user_conf}]", "norm=centred"]
        + ["seed=0,1", "optim.lr=1e-3,1e-2", *tiny],
        cwd=tmp_path,
        env={**cli_env(tmp_path), **_user_env(), "ENTRIES": "inference_batch_one", "DIR": str(out)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    entry = out / "inference_batch_one"
    runs = [json.loads(p.read_text()) for p in sorted(entry.glob("stage*/**/results.json"))]
    # stage 2: one multirun over every (cell, seed), the job list's sweeper, in one dir
    assert (entry / "stage2" / "multirun.yaml").is_file() and len(list(entry.glob("stage2/*/results.json"))) == 2
    assert sorted((r["norm"], r["norm_kind"], r["seed"]) for r in runs) == [
        ("centred", "batch", 0),
        ("centred", "batch", 0),
        ("centred", "batch", 1),
        ("layer", "token", 0),
        ("layer", "token", 0),
        ("layer", "token", 1),
    ]
    metric = "test/acc_batch_stats@eval_batch=1"

    def chosen(norm: str) -> dict[int, float]:
        """Seed -> headline at the norm's rate with the best seed-0 val/acc (the selection, by hand)."""
        first = max((r for r in runs if (r["norm"], r["seed"]) == (norm, 0)), key=lambda r: r["metrics"]["val/acc"])
        lr = first["config"]["optim"]["lr"]
        return {r["seed"]: r["metrics"][metric] for r in runs if r["norm"] == norm and r["config"]["optim"]["lr"] == lr}

    own, ref = chosen("centred"), chosen("layer")
    diffs = [own[s] - ref[s] for s in (0, 1)]
    mean, ci = sum(diffs) / 2, 12.706204736174698 * abs(diffs[0] - diffs[1]) / 2  # t(0.975, 1) * sd / sqrt(2)
    (row,) = list(csv.DictReader((out / "scorecard.csv").open()))
    assert (row["experiment"], row["norm"], row["kind"], row["metric"]) == (
        "inference_batch_one",
        "centred",
        "batch",
        metric,
    )
    assert float(row["difference"]) == pytest.approx(mean, abs=1e-9) and row["seeds"] == "2"
    assert float(row["ci95"]) == pytest.approx(ci, abs=1e-9)
    assert "| inference_batch_one | " + metric + " | " in (out / "scorecard.md").read_text()
    assert "| entry | headline metric | centred (batch statistics) |" in (out / "scorecard.md").read_text()
    report = out / "inference_batch_one" / "report"
    compared = list(csv.DictReader((report / "comparisons.csv").open()))  # the report placed it by its recorded kind
    assert [(c["norm"], c["control"]) for c in compared] == [("centred", "layer")]
    from_report = trained_scorecard([str(report), "--out", str(tmp_path / "from_report")])
    assert (from_report / "scorecard.csv").read_text() == (out / "scorecard.csv").read_text()
