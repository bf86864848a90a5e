"""The trained scorecard (python -m normbench.report.scorecard): every norm against layer norm in every entry, from
sweep dirs and from report folders alike; differences and CIs by hand; scripts/catalogue/all.sh's refusals."""

import csv
import math
import os
import subprocess
from pathlib import Path

import pytest
from cli import ROOT, cli_env
from fake_runs import write_job

from normbench.report.confidence import Estimate, minimum_detectable_effect
from normbench.report.pipeline import main as report_main
from normbench.report.scorecard import BEGIN, END
from normbench.report.scorecard import main as scorecard_main

T_975_DF2 = 4.302652729911275  # Student t quantile (0.975, 2 df), from tables

#: val/acc over seeds 0, 1, 2 by (entry, norm, batch size); dyt and centred are a user's norms (not built in)
VAL_ACC = {
    ("small_batch", "layer", 2): [0.80, 0.82, 0.84],
    ("small_batch", "layer", 32): [0.81, 0.83, 0.85],
    ("small_batch", "batch_masked", 2): [0.60, 0.66, 0.69],
    ("small_batch", "batch_masked", 32): [0.78, 0.80, 0.83],
    ("small_batch", "dyt", 2): [0.79, 0.80, 0.84],
    ("small_batch", "dyt", 32): [0.81, 0.83, 0.86],
    ("padding", "layer", 32): [0.70, 0.72, 0.74],
    ("padding", "centred", 32): [0.71, 0.73, 0.75],
    ("ddp", "batch_masked", 32): [0.70, 0.71, 0.72],
}
KINDS = {"dyt": "token", "centred": "batch"}  # what the runs of a user's norm record (results.json norm_kind)


def _sweep(root: Path) -> Path:
    for num, ((entry, norm, bs), accs) in enumerate(VAL_ACC.items()):
        for seed, acc in enumerate(accs):
            write_job(
                root / entry / f"{num}_{norm}_bs{bs}_s{seed}",
                norm=norm,
                seed=seed,
                batch_size=bs,
                experiment=entry,
                metrics={"val/acc": acc},
                norm_kind=KINDS.get(norm),
            )
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_each_norm_against_layer_norm_at_the_setting_where_it_trails_most(tmp_path: Path, capsys) -> None:
    sweep = _sweep(tmp_path / "multirun")
    out = scorecard_main([str(sweep), "--out", str(tmp_path / "card")])
    rows = {(r["experiment"], r["norm"]): r for r in _rows(out / "scorecard.csv")}

    # batch_masked trails layer by 17 points at batch 2 (2.7 at 32): seeds -0.20, -0.16, -0.15, sd sqrt(0.0007)
    masked = rows[("small_batch", "batch_masked")]
    assert (masked["setting"], masked["kind"], masked["verdict"]) == ("batch size 2", "batch", "clear")
    assert float(masked["difference"]) == pytest.approx(-0.17)
    assert float(masked["ci95"]) == pytest.approx(T_975_DF2 * math.sqrt(0.0007) / math.sqrt(3))
    assert (masked["seeds"], masked["method"], masked["settings compared"]) == ("3", "paired", "2")
    # dyt: -1 point at batch 2 (+0.3 at 32), seeds -0.01, -0.02, 0.00 (sd 0.01): a null, with its MDE
    dyt = rows[("small_batch", "dyt")]
    ci = T_975_DF2 * 0.01 / math.sqrt(3)
    assert (dyt["setting"], dyt["kind"], dyt["verdict"]) == ("batch size 2", "token", "null")
    assert float(dyt["difference"]) == pytest.approx(-0.01) and float(dyt["ci95"]) == pytest.approx(ci)
    mde = minimum_detectable_effect(Estimate(-0.01, ci, 3, "paired", 2))
    assert float(dyt["mde80"]) == pytest.approx(mde, rel=1e-6) and mde > ci
    # a user's batch-statistic norm one point ahead in every seed: better, its CI of width 0
    centred = rows[("padding", "centred")]
    assert (centred["kind"], centred["verdict"], float(centred["difference"])) == (
        "batch",
        "against",
        pytest.approx(0.01),
    )
    assert rows[("ddp", "batch_masked")]["verdict"] == "no layer norm run"

    table = (out / "scorecard.md").read_text()
    # the built-in norms in their order, then the user's by name; the entries by name
    assert (
        "| entry | headline metric | batch_masked (batch statistics) | centred (batch statistics) | dyt (per-token) |"
        in table
    )
    assert (
        "| small_batch | val/acc | worse: -17.0 +/- 6.6 points (batch size 2; 3 seeds) | not run | "
        f"null (MDE {mde * 100:.2g} points): -1.0 +/- 2.5 points (batch size 2; 3 seeds) |"
    ) in table
    assert "| padding | val/acc | not run | better: +1 +/- 0 points (3 seeds) | not run |" in table
    assert "| ddp | val/acc | no layer norm run | not run | not run |" in table
    assert "From 27 runs (27 finished) of 3 entries. Without a layer norm run, so without a comparison: ddp." in table
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out.resolve())


def test_report_folders_give_the_scorecard_of_their_sweeps(tmp_path: Path) -> None:
    """A report folder keeps each run's kind (results.csv norm_kind) and is read back into the same table; without
    the kind a user's norm could not be placed (no comparison with the per-token control)."""
    sweep = _sweep(tmp_path / "multirun")
    reports = tmp_path / "findings"
    for entry in ("small_batch", "padding", "ddp"):
        report_main([str(sweep / entry), "--out", str(reports / entry)])
    by_norm = {r["norm"]: r["norm_kind"] for r in _rows(reports / "small_batch" / "results.csv")}
    assert by_norm == {"layer": "", "batch_masked": "", "dyt": "token"}  # built-ins: their kind is known without
    assert [r["norm"] for r in _rows(reports / "padding" / "comparisons.csv")] == ["centred"]

    from_sweep = scorecard_main([str(sweep), "--out", str(tmp_path / "a")])
    from_reports = scorecard_main([str(reports), "--out", str(tmp_path / "b")])
    assert (from_reports / "scorecard.csv").read_text() == (from_sweep / "scorecard.csv").read_text()
    assert (from_reports / "scorecard.md").read_text() == (from_sweep / "scorecard.md").read_text()


def test_the_readme_gets_the_table_between_its_markers(tmp_path: Path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Findings\n\n{BEGIN}\nhand-typed\n{END}\n\nafter\n")
    scorecard_main([str(_sweep(tmp_path / "multirun")), "--out", str(tmp_path / "card"), "--readme", str(readme)])
    text = readme.read_text()
    assert "hand-typed" not in text and text.endswith(f"{END}\n\nafter\n")
    assert f"{BEGIN}\n| entry | headline metric |" in text and "| small_batch | val/acc | worse: -17.0" in text


def _setting(comparison: dict[str, str]) -> str:
    """A comparisons.csv row's setting in words (its columns between ``experiment`` and ``norm``)."""
    keys = list(comparison)[1 : list(comparison).index("norm")]
    return ", ".join(f"{k.rsplit('.', 1)[-1].replace('_', ' ')} {comparison[k] or None}" for k in keys)


def test_the_committed_findings_scorecard_matches_their_reports_and_the_readme(tmp_path: Path, capsys) -> None:
    """Read back from docs/findings, each effect against layer norm is the one the entry's report computed
    (comparisons.csv: every batch-statistic norm against the best per-token norm, layer there), and the README's
    table is this command's output."""
    out = scorecard_main([str(ROOT / "docs" / "findings"), "--out", str(tmp_path)])
    found = [r for r in _rows(out / "scorecard.csv") if r["verdict"] in ("clear", "against", "null")]
    assert len(found) >= 8
    for row in found:
        if row["kind"] != "batch":
            continue
        path = ROOT / "docs" / "findings" / row["experiment"].removesuffix("_lm") / "comparisons.csv"
        same = [
            c
            for c in _rows(path)
            if (c["experiment"], c["norm"], c["control"], _setting(c))
            == (row["experiment"], row["norm"], "layer", row["setting"])
        ]
        assert len(same) == 1, row
        assert float(same[0]["difference"]) == pytest.approx(float(row["difference"]))
        assert float(same[0]["ci95"]) == pytest.approx(float(row["ci95"])) and same[0]["verdict"] == row["verdict"]
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(BEGIN) + len(BEGIN) + 1 : readme.index(END)]
    assert section == capsys.readouterr().out.rsplit(str(out.resolve()), 1)[0]


def test_bad_input_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    only_masked = tmp_path / "masked"
    for seed in (0, 1):
        write_job(only_masked / str(seed), norm="batch_masked", seed=seed, metrics={"val/acc": 0.5})
    for dirs, message in [
        ([tmp_path / "nowhere"], "is not a directory; accepted: sweep dirs (multirun/...) or report folders"),
        ([tmp_path / "empty"], "holds neither a Hydra job dir of train.py nor a report's results.csv; accepted:"),
        ([only_masked], "no layer norm run among the runs given (norms: batch_masked); the scorecard is relative"),
    ]:
        with pytest.raises(SystemExit) as stop:
            scorecard_main([str(d) for d in dirs])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and line.startswith("error: ") and message in line, line


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"ENTRIES": "small_batch nope"}, ["norm=rms"], "error: ENTRIES has 'nope'; accepted: batch_stat_fluctuation,"),
        ({}, ["scale=gpu"], "error: all.sh needs norm=<names> (comma-separated, e.g. norm=dyt,batch_masked), got ''"),
        ({}, ["norm=custom", "norm._target_=my.Norm"], "error: norm._target_=my.Norm would apply to every norm"),
        ({}, ["norm=dyt", "+norm.alpha_init=0.7"], "error: +norm.alpha_init=0.7 would apply to every norm"),
    ],
)
def test_all_sh_refuses_bad_input_before_any_run(tmp_path: Path, env: dict, args: list, message: str) -> None:
    script = ROOT / "scripts" / "catalogue" / "all.sh"
    proc = subprocess.run(
        [str(script), *args], cwd=tmp_path, env={**cli_env(tmp_path), **env}, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == "" and not os.listdir(tmp_path)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(message), line
    if "ENTRIES" in env:  # the accepted names are the recipes, less the helpers
        assert line.endswith("padding, small_batch, train_eval_gap") and "two_stage" not in line and " all " not in line
