"""The catalogue's protocol: each norm at its best learning rate chosen on validation, the controls' flatness,
the minimum detectable effect of a null, numbers rounded to their CI, and early stopping on the best weights."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from cli import train
from conftest import write_mr_snippets
from fake_runs import write_job
from scipy import stats

from normbench.report.confidence import Estimate, mean_ci, minimum_detectable_effect, power
from normbench.report.index import main as index_main
from normbench.report.pipeline import main
from normbench.report.selection import main as selection_main
from normbench.report.selection import override
from normbench.report.summary import decimals_of, fmt_difference, fmt_with_ci

PROTOCOL = {"report": {"select": "optim.lr", "metric": "test/acc", "flat_over": "data.batch_size"}}


def test_mde_is_the_effect_a_paired_t_test_detects_with_80_percent_power():
    diffs = [0.01, 0.03, -0.01]  # three seeds' paired differences
    est = mean_ci(diffs)
    se = np.std(diffs, ddof=1) / math.sqrt(3)  # by hand: s / sqrt(n)
    assert est.standard_error == pytest.approx(se)
    mde = minimum_detectable_effect(est)
    assert power(mde, se, 2) == pytest.approx(0.80, abs=1e-6)
    # independently: simulate the paired t test of 3 seeds at a true difference of `mde`, the sd observed
    rng = np.random.default_rng(0)
    samples = rng.normal(mde, np.std(diffs, ddof=1), size=(200_000, 3))
    rejected = stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.80, abs=0.005)
    # many seeds: the normal approximation (z_0.975 + z_0.8) * se
    wide = Estimate(0.0, stats.t.ppf(0.975, 1000) * 0.01, 1001, df=1000)
    assert minimum_detectable_effect(wide) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=2e-3)
    # every seed the same: nothing to detect below; one seed: no CI, no MDE
    assert minimum_detectable_effect(mean_ci([0.02, 0.02, 0.02])) == 0.0
    assert math.isnan(minimum_detectable_effect(mean_ci([0.02])))


@pytest.mark.parametrize(
    ("mean", "ci", "expected"),
    [
        (0.02746, 0.007057, ("0.0275", "0.0071")),  # two significant digits of the CI, the mean to match
        (0.2378, 0.07318, ("0.238", "0.073")),
        (5.03, 8.53, ("5.0", "8.5")),
        (123.4, 12.3, ("123", "12")),
        (0.5, 0.95, ("0.50", "0.95")),
        (1.0, float("nan"), ("1", "n/a")),
    ],
)
def test_numbers_are_rounded_to_two_significant_digits_of_their_ci(mean, ci, expected):
    assert fmt_with_ci(mean, ci) == expected


def test_shares_are_stated_in_points_and_other_metrics_with_their_unit():
    assert decimals_of(0.71) == 2 and decimals_of(7.1) == 1 and decimals_of(71) == 0
    assert fmt_difference("val/acc", 0.05032, 0.08531) == "5.0 +/- 8.5 points"
    assert fmt_difference("val/train_eval_gap", 0.02746, 0.007057) == "2.75 +/- 0.71 points"
    assert fmt_difference("val/bpc", 0.04, 0.013) == "0.040 +/- 0.013 bits per character"
    assert fmt_difference("probe/causal_leak", 0.2378, 0.07318) == "0.238 +/- 0.073 (RMS feature change)"


def _cell(root: Path, norm: str, bs: int, lr: float, seed: int, val: float, test: float) -> None:
    write_job(
        root / f"{norm}-bs{bs}-lr{lr}-s{seed}",
        norm=norm,
        seed=seed,
        batch_size=bs,
        metrics={"val/acc": val, "test/acc": test},
        extra_overrides={"optim.lr": lr},
        config_changes={**{"optim.lr": lr}, **{f"report.{k}": v for k, v in PROTOCOL["report"].items()}},
    )


def test_selection_chooses_on_validation_over_the_seeds_every_grid_value_ran(tmp_path: Path):
    """Two stages: seed 0 at both learning rates, seeds 1 and 2 at the chosen one only. Seed 0 chooses 0.001
    (val 0.72 vs 0.70); all seeds' mean would choose 0.003 (0.64 vs 0.70), and test would choose 0.003 too."""
    for seed, val, test in [(0, 0.72, 0.60), (1, 0.60, 0.61), (2, 0.60, 0.62)]:
        _cell(tmp_path, "layer", 2, 0.001, seed, val, test)
    _cell(tmp_path, "layer", 2, 0.003, 0, 0.70, 0.90)
    for seed in range(3):  # batch_masked at one learning rate only: no choice to make, one candidate
        _cell(tmp_path, "batch_masked", 2, 0.003, seed, 0.60, 0.50 + seed / 100)
    out = main([str(tmp_path)])

    summary = {r["norm"]: r for r in _csv(out / "summary.csv")}
    assert summary["layer"]["optim.lr (chosen)"] == "0.001" and summary["layer"]["n_seeds"] == "3"
    assert float(summary["layer"]["test/acc:mean"]) == pytest.approx(0.61)  # the chosen value's test accuracy
    assert summary["batch_masked"]["optim.lr (chosen)"] == "0.003"
    selection = [r for r in _csv(out / "selection.csv") if r["norm"] == "layer"]
    assert {(r["optim.lr"], r["chosen"], r["selection seeds"]) for r in selection} == {
        ("0.001", "True", "0"),
        ("0.003", "False", "0"),
    }
    md = (out / "summary.md").read_text()
    # the headline is the test metric: batch_masked 0.51 vs layer 0.61 at their own best learning rates
    assert "batch_masked is 10 +/- 0 points below layer (test/acc 0.51 vs 0.61; paired over 3 seeds; " in md
    assert "each at its best optim.lr 0.003 vs 0.001)" in md
    assert "| layer | 0.001 | 3 |" in md


def test_an_entry_that_chooses_on_validation_reports_the_test_metric_unless_told(tmp_path: Path):
    """ddp chose on val/acc and named no headline: its sentence was the very val/acc its choice maximized (a clear
    1.6 points; on test/acc the same runs give a null). The headline is the selection metric's test twin."""
    for norm, val, test in [("layer", 0.80, 0.70), ("batch_masked", 0.70, 0.70)]:
        for lr, shift in [(0.001, 0.0), (0.003, -0.05)]:
            for seed in range(3):
                write_job(
                    tmp_path / f"{norm}-{lr}-{seed}", norm=norm, seed=seed,
                    metrics={"val/acc": val + shift + seed / 100, "test/acc": test + seed / 1000},
                    extra_overrides={"optim.lr": lr},
                    config_changes={"optim.lr": lr, "report.select": "optim.lr", "report.select_on": "val/acc"},
                )  # fmt: skip
    record = json.loads((main([str(tmp_path)]) / "finding.json").read_text())[0]
    assert record["metric"] == "test/acc" and "(test/acc 0.701 vs 0.701;" in record["sentence"]
    assert record["verdict"].startswith("null")
    told = main([str(tmp_path), "--metric", "val/acc", "--out", str(tmp_path / "val")])
    record = json.loads((told / "finding.json").read_text())[0]
    assert record["metric"] == "val/acc" and record["verdict"] == "clear"  # 10 points, every seed alike


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_report_says_whether_the_controls_are_flat_and_states_the_mde_of_a_null(tmp_path: Path):
    bent = tmp_path / "bent"
    for seed in range(3):
        for bs in (2, 32):
            layer = 0.70 + 0.11 * (bs == 32) + seed / 1000  # 11 points better at batch size 32, every seed
            _cell(bent, "layer", bs, 0.001, seed, layer, layer)
            _cell(bent, "batch_masked", bs, 0.001, seed, 0.5, 0.5 + seed / 100)
    bent_md = (main([str(bent), "--out", str(tmp_path / "r2")]) / "summary.md").read_text()
    assert "NOT flat across batch size" in bent_md
    assert "layer 11 +/- 0 points between batch size 32 and 2" in bent_md
    record = json.loads((tmp_path / "r2" / "finding.json").read_text())[0]
    assert record["controls_flat"] is False and record["verdict"] == "clear" and record["runs"] == 12

    noisy = tmp_path / "noisy"
    for seed, (a, b) in enumerate([(0.70, 0.69), (0.66, 0.70), (0.71, 0.70)]):
        for bs in (2, 32):
            _cell(noisy, "layer", bs, 0.001, seed, b, b)
            _cell(noisy, "batch_masked", bs, 0.001, seed, a, a)
    noisy_md = (main([str(noisy), "--out", str(tmp_path / "r3")]) / "summary.md").read_text()
    assert "The controls are flat across batch size" in noisy_md
    # batch_masked - layer = +0.01, -0.04, +0.01: a null; its MDE by hand from s / sqrt(3) and df 2
    diffs = [0.01, -0.04, 0.01]
    mde = minimum_detectable_effect(mean_ci(diffs))
    assert f"these 3 seeds detect {mde * 100:.2g} points with 80% power" in noisy_md
    assert f"Verdict: **null (MDE {mde * 100:.2g} points)**." in noisy_md


def _noisy_snippets(path: Path) -> Path:
    """The MR fixture with every third label flipped: a model overfits it, so validation accuracy falls."""
    write_mr_snippets(path)
    lines = []
    for i, line in enumerate(path.read_bytes().decode().split("\r\n")):
        ident, score, text = line.split("\t")
        lines.append("\t".join([ident, f"{-float(score):.11f}" if i % 3 == 0 else score, text]))
    path.write_bytes("\r\n".join(lines).encode())
    return path


@pytest.mark.slow
def test_early_stopping_validates_and_tests_the_best_checkpoint(tmp_path: Path):
    """patience 0 stops at the first validation without improvement, so the last epoch is worse than the best:
    the reported val/acc must be the best epoch's (the monitored best score), not the last one's."""
    run_dir = tmp_path / "run"
    args = [
        f"data.path={_noisy_snippets(tmp_path / 'noisy.txt')}",
        "logger=csv",
        "callbacks=none",
        "data.batch_size=16",
        "data.vocab_size=300",
        "model.d_model=32",
        "model.d_ff=64",
        "model.n_layers=1",
        "optim.lr=1e-2",
        "trainer.max_epochs=6",
        "early_stopping.patience=0",
        "checkpoint.every_n_steps=0",
        f"hydra.run.dir={run_dir}",
    ]
    train(args, tmp_path)
    record = json.loads((run_dir / "results.json").read_text())
    stopping = record["early_stopping"]
    with next(run_dir.rglob("metrics.csv")).open() as handle:
        per_epoch = [float(row["val/acc"]) for row in csv.DictReader(handle) if row.get("val/acc")][:-1]  # fit only
    assert record["epochs"] < 6 and stopping["stopped_epoch"] == len(per_epoch) - 1 >= 1  # it did stop early
    assert per_epoch[-1] < max(per_epoch) == pytest.approx(stopping["best_score"])
    assert record["metrics"]["val/acc"] == pytest.approx(max(per_epoch))  # the best epoch's weights, not the last
    assert stopping["best"] == str(run_dir / "checkpoints" / "best.ckpt")

    bad = train([*args[:-1], "early_stopping.patience=-1", f"hydra.run.dir={tmp_path / 'bad'}"], tmp_path, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: early_stopping.patience=-1 is out of range; accepted: null (no early stopping) or an integer >= 0"
    ]


def test_selection_cli_prints_the_second_stage_of_each_cell(tmp_path: Path, capsys):
    for lr, val in [(0.001, 0.70), (0.003, 0.74), (0.01, 0.60)]:
        _cell(tmp_path, "layer", 2, lr, 0, val, 0.0)
        _cell(tmp_path, "batch_masked", 2, lr, 0, 1.4 - val * (lr != 0.01), 0.0)
    selection_main([str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    # with the batch size all first-stage runs shared, which a single second-stage run would not get otherwise
    assert sorted(lines) == [
        "data.batch_size=2 norm=batch_masked optim.lr=0.01",
        "data.batch_size=2 norm=layer optim.lr=0.003",
    ]

    write_job(tmp_path / "other", norm="layer", seed=0, experiment="padding", metrics={"val/acc": 0.5})
    with pytest.raises(SystemExit) as stop:
        selection_main([str(tmp_path / "other")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == "error: padding: the selection key None is not swept; swept: nothing"


def test_index_page_and_the_readme_section_come_from_the_reports(tmp_path: Path, capsys):
    """Two entries' reports written by the report itself, one old report folder without a finding.json."""
    for entry in ("small_batch", "causal_leak"):
        for seed, (a, b) in enumerate([(0.60, 0.70), (0.61, 0.72), (0.59, 0.71)]):
            for norm, acc in (("batch_masked", a), ("layer", b)):
                write_job(
                    tmp_path / "runs" / entry / f"{norm}{seed}",
                    norm=norm,
                    seed=seed,
                    experiment=entry,
                    metrics={"val/acc": acc},
                )
        main([str(tmp_path / "runs" / entry), "--out", str(tmp_path / "findings" / entry)])
    (tmp_path / "findings" / "padding").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Findings\n\n<!-- findings:begin -->\nhand-typed\n<!-- findings:end -->\n\nafter\n")
    capsys.readouterr()
    index_main([str(tmp_path / "findings"), "--readme", str(readme)])

    page = (tmp_path / "findings" / "README.md").read_text()
    record = json.loads((tmp_path / "findings" / "small_batch" / "finding.json").read_text())[0]
    assert f"| small_batch | {record['sentence']} | clear of zero (95% CI) | 6 |" in page
    assert "[summary](small_batch/summary.md)" in page and "[summary](causal_leak/summary.md)" in page
    assert "Not yet reported with a finding.json (reports from before the protocol): padding." in page
    records = [
        json.loads((tmp_path / "findings" / e / "finding.json").read_text())[0] for e in ("small_batch", "causal_leak")
    ]
    spans = [r["sweep_span_s"] for r in records]
    assert all(span > 0 for span in spans)
    assert f"In all: 12 runs in {sum(spans) / 60:.1f} min of sweeps, each entry's time from" in page
    text = readme.read_text()
    assert "hand-typed" not in text and text.endswith("<!-- findings:end -->\n\nafter\n")
    assert "[summary](findings/small_batch/summary.md)" in text  # links relative to the README

    readme.write_text("no markers")
    with pytest.raises(SystemExit) as stop:
        index_main([str(tmp_path / "findings"), "--readme", str(readme)])
    assert (
        stop.value.code == 2
        and "has no <!-- findings:begin --> ... <!-- findings:end --> markers" in capsys.readouterr().err
    )


def test_the_flatness_check_reads_report_flat_metric_where_the_headline_cannot_move(tmp_path: Path):
    """train_eval_gap's headline, the gap, is 0 for layer norm by definition; its report.flat_metric is val/acc."""
    for flat_metric, expected in [(None, "The controls are flat across batch size"), ("val/acc", "NOT flat")]:
        root = tmp_path / str(flat_metric)
        for seed, tests in enumerate([(0.70, 0.69), (0.66, 0.70), (0.71, 0.70)]):  # test/acc: noise, no trend
            for bs, test in zip((2, 32), tests, strict=True):
                val = 0.70 + 0.11 * (bs == 32) + seed / 1000  # val/acc: 11 points better at batch size 32
                changes = {"report.metric": "test/acc", "report.flat_over": "data.batch_size"}
                changes |= {"report.flat_metric": flat_metric} if flat_metric else {}
                for norm, metrics in [
                    ("layer", {"val/acc": val, "test/acc": test}),
                    ("batch_masked", {"val/acc": 0.5, "test/acc": 0.5 + seed / 100}),
                ]:
                    write_job(
                        root / f"{norm}-bs{bs}-s{seed}",
                        norm=norm,
                        seed=seed,
                        batch_size=bs,
                        metrics=metrics,
                        config_changes=changes,
                    )
        summary = (main([str(root), "--out", str(tmp_path / f"report-{flat_metric}")]) / "summary.md").read_text()
        assert expected in summary, flat_metric
    # the same from the command line, for runs whose config predates the key
    again = main([str(tmp_path / "None"), "--out", str(tmp_path / "again"), "--flat-metric", "val/acc"])
    assert "NOT flat" in (again / "summary.md").read_text()


def test_second_stage_cells_carry_the_first_stage_overrides_every_run_shared(tmp_path: Path, capsys) -> None:
    """A sweep of one value (ddp's data.batch_size=4) reaches only the sweep: the single second-stage run needs it.
    The cells come longest first (their chosen run's wall time), so a launcher handing out jobs in order ends its
    workers together: layer norm's chosen run took 30 s, masked batch norm's 20 s (its unchosen one 90 s)."""
    walls = {("batch_masked", 0.001): 90.0, ("batch_masked", 0.003): 20.0, ("layer", 0.001): 30.0}
    for seed in (0,):
        for norm, accs in (("batch_masked", (0.6, 0.7)), ("layer", (0.75, 0.65))):
            for lr, acc in zip((0.001, 0.003), accs, strict=True):
                write_job(tmp_path / f"{norm}{lr}", norm=norm, seed=seed, batch_size=4, metrics={"val/acc": acc},
                          extra_overrides={"optim.lr": lr, "data.batch_size": 4},
                          config_changes={"optim.lr": lr, "report.select": "optim.lr"},
                          wall_time_s=walls.get((norm, lr), 5.0))  # fmt: skip
    selection_main([str(tmp_path)])
    assert capsys.readouterr().out.splitlines() == [
        "data.batch_size=4 norm=layer optim.lr=0.001",
        "data.batch_size=4 norm=batch_masked optim.lr=0.003",
    ]
    # a list value, stored as a tuple, is written back as Hydra reads it (input_scale's data.channel_scales)
    assert override("data.channel_scales", (1, 100, 10000)) == "data.channel_scales=[1,100,10000]"


def test_a_learning_rate_where_seeds_diverged_is_not_chosen_on_the_seeds_that_survived(tmp_path: Path):
    """At 0.003 seeds 0 and 1 diverged (failed runs) and seed 2 reached the best validation accuracy of the grid;
    0.001 finished in every seed. Chosen on the survivor, 0.003 would be compared on one seed."""
    for seed, val in [(0, 0.70), (1, 0.71), (2, 0.72)]:
        _cell(tmp_path, "layer", 2, 0.001, seed, val, val)
    _cell(tmp_path, "layer", 2, 0.003, 2, 0.80, 0.80)
    for seed in (0, 1):
        write_job(
            tmp_path / f"layer-bs2-lr0.003-s{seed}-failed",
            norm="layer",
            seed=seed,
            batch_size=2,
            status="failed",
            error="NonFiniteError: non-finite gradient at step 83",
            extra_overrides={"optim.lr": 0.003},
            config_changes={**{"optim.lr": 0.003}, **{f"report.{k}": v for k, v in PROTOCOL["report"].items()}},
        )
    for seed in range(3):
        _cell(tmp_path, "batch_masked", 2, 0.001, seed, 0.60, 0.60)
    out = main([str(tmp_path)])

    summary = {r["norm"]: r for r in _csv(out / "summary.csv")}
    assert summary["layer"]["optim.lr (chosen)"] == "0.001" and summary["layer"]["n_seeds"] == "3"
    selection = {r["optim.lr"]: r for r in _csv(out / "selection.csv") if r["norm"] == "layer"}
    assert selection["0.001"]["chosen"] == "True" and selection["0.001"]["selection seeds"] == "0 1 2"
    assert float(selection["0.001"]["val/acc (selection mean)"]) == pytest.approx(0.71)
    assert selection["0.003"]["chosen"] == "False" and selection["0.003"]["failed seeds"] == "0 1"
    assert selection["0.001"]["failed seeds"] == ""
