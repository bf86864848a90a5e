"""The report on fake job dirs (no training): CSV rows, CIs by hand, the computed sentence, figures, refusals, W&B."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from cli import cli_env, train
from fake_runs import write_job
from scipy import stats
from wandb_files import offline_run

from normbench.report.confidence import difference_ci, mean_ci
from normbench.report.pipeline import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_975 = {
    1: 12.706204736174698,
    2: 4.302652729911275,
    3: 3.182446305284263,
}  # Student t quantiles (0.975, df), from tables

#: val/acc by (norm, batch size) over seeds 0, 1, 2; None = that seed failed
VAL_ACC = {
    ("layer", 2): [0.80, 0.82, 0.84],
    ("layer", 32): [0.81, 0.83, 0.85],
    ("batch_masked", 2): [0.60, 0.66, 0.69],
    ("batch_masked", 32): [0.78, 0.80, 0.83],
    ("batch", 2): [0.70, 0.72, None],
    ("batch", 32): [0.79, 0.80, 0.81],
}


def small_batch_sweep(root: Path) -> Path:
    """3 norms x 2 batch sizes x 3 seeds (one failed), plus a killed run (no results.json)."""
    num = 0
    for (norm, bs), accs in VAL_ACC.items():
        for seed, acc in enumerate(accs):
            batch_stats = norm.startswith("batch")
            gap = -0.2 / bs if batch_stats else 0.0  # trainer.validate returns the instruments logged in validation
            write_job(
                root / f"{num}_norm={norm},data.batch_size={bs},seed={seed}",
                norm=norm,
                seed=seed,
                batch_size=bs,
                metrics=None
                if acc is None
                else {"val/acc": acc, "test/acc": acc - 0.01, "val/loss": 1 - acc, "val/train_eval_gap": gap},
                instruments={"val/train_eval_gap": gap, "stats/l0/var_dist": 0.1},
                series={"stats/var_dist": [[0, 0.5], [10, 0.3 + seed / 100]], "stats/l0/var_dist": [[0, 1.0]]}
                if batch_stats
                else None,
                status="ok" if acc is not None else "failed",
                error="BatchStatisticsError: norm=batch got 1 real value per channel",
            )
            num += 1
    write_job(root / f"{num}_norm=layer,data.batch_size=32,seed=3", norm="layer", seed=3, batch_size=32, status=None)
    return root


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return small_batch_sweep(tmp_path / "multirun" / "small_batch")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_results_csv_has_one_row_per_run_with_failed_and_missing_listed(sweep: Path, capsys):
    out = main([str(sweep)])

    assert out == sweep / "report" and capsys.readouterr().out.strip().splitlines()[-1] == str(out.resolve())
    rows = read_csv(out / "results.csv")
    assert len(rows) == 19
    assert sum(r["status"] == "ok" for r in rows) == 17
    (failed,) = [r for r in rows if r["status"] == "failed"]
    assert (failed["norm"], failed["batch_size"], failed["seed"]) == ("batch", "2", "2")
    assert failed["error"].startswith("BatchStatisticsError") and failed["val/acc"] == ""
    (missing,) = [r for r in rows if r["status"] == "missing"]
    assert (missing["norm"], missing["seed"], missing["data.batch_size"]) == ("layer", "3", "32")
    assert "killed" in missing["error"] and missing["experiment"] == "small_batch"
    ok = {(r["norm"], int(r["data.batch_size"]), int(r["seed"])): r for r in rows if r["status"] == "ok"}
    assert float(ok[("batch_masked", 2, 1)]["val/acc"]) == 0.66
    assert float(ok[("batch_masked", 2, 1)]["val/train_eval_gap"]) == pytest.approx(-0.1)
    assert float(ok[("layer", 32, 0)]["test/acc"]) == pytest.approx(0.80)
    assert ok[("layer", 32, 0)]["stats/l0/var_dist"] == "0.1" and ok[("layer", 32, 0)]["model"] == "transformer"
    assert ok[("layer", 32, 0)]["data_stats/num_train"] == "480" and ok[("layer", 32, 0)]["global_step"] == "100"

    md = (out / "summary.md").read_text()
    failed_table = md.split("## Failed and missing runs")[1]
    assert "| small_batch | failed | batch | 2 | data.batch_size=2 | BatchStatisticsError" in failed_table
    assert "| small_batch | missing | layer | 3 | data.batch_size=32 | no results.json" in failed_table


def test_summary_means_and_cis_match_a_hand_computation(sweep: Path):
    out = main([str(sweep), "--out", str(sweep.parent / "rep")])

    rows = {(r["norm"], r["data.batch_size"]): r for r in read_csv(out / "summary.csv")}
    assert len(rows) == 6 and {r["experiment"] for r in rows.values()} == {"small_batch"}
    layer = rows[("layer", "2")]
    # [0.80, 0.82, 0.84]: mean 0.82, s = 0.02, half-width t(0.975, 2) * s / sqrt(3)
    assert float(layer["val/acc:mean"]) == pytest.approx(0.82)
    assert float(layer["val/acc:ci95"]) == pytest.approx(T_975[2] * 0.02 / math.sqrt(3))
    assert layer["n_seeds"] == "3" and layer["not_ok"] == "0"
    batch = rows[("batch", "2")]  # one seed failed: n = 2, t(0.975, 1) = 12.706
    assert batch["n_seeds"] == "2" and batch["not_ok"] == "1"
    assert float(batch["val/acc:ci95"]) == pytest.approx(T_975[1] * np.std([0.70, 0.72], ddof=1) / math.sqrt(2))
    assert rows[("layer", "32")]["not_ok"] == "1"  # the killed run
    assert float(rows[("layer", "2")]["val/train_eval_gap:mean"]) == 0.0

    md = (out / "summary.md").read_text()
    assert "| data.batch_size | norm | seeds | val/acc (mean ± 95% CI) | test/acc (mean ± 95% CI) |" in md
    assert md.count("| val/train_eval_gap (mean ± 95% CI) |") == 1 and "stats/l0/var_dist (mean" not in md
    assert f"| 2 | layer | 3 | 0.82 ± {T_975[2] * 0.02 / math.sqrt(3):.4g} |" in md
    assert "| 2 | batch | 2 (1 not ok) | 0.71 ± " in md


def test_one_seed_has_no_ci(tmp_path: Path):
    for seed, norm in enumerate(["layer", "batch"]):
        write_job(tmp_path / f"{norm}", norm=norm, seed=0, metrics={"val/acc": 0.7 + seed / 10})
    out = main([str(tmp_path)])
    md = (out / "summary.md").read_text()
    assert "| layer | 1 | 0.7 ± n/a |" in md and "| batch | 1 | 0.8 ± n/a |" in md
    # one seed: no CI, so the numbers keep four significant digits and there is no verdict
    assert "For transformer, batch is 10 +/- n/a points above layer (val/acc 0.8 vs 0.7; paired over 1 seeds)." in md
    assert "Verdict: **no CI**." in md


def test_sentence_states_the_largest_gap_with_its_paired_ci(sweep: Path):
    out = main([str(sweep)])

    # largest lead of the best per-token norm over the worst batch norm: batch size 2, layer vs batch_masked;
    # paired differences -0.20, -0.16, -0.15: mean -0.17, s = sqrt(0.0007)
    half_width = T_975[2] * math.sqrt(0.0007) / math.sqrt(3)
    expected = (
        f"At batch size 2, batch_masked is 17.0 +/- {100 * half_width:.1f} points below layer "
        "(transformer, val/acc 0.65 vs 0.82; paired over 3 seeds)."
    )
    assert f"{100 * half_width:.1f}" == "6.6"
    assert expected in (out / "summary.md").read_text()


def test_sentence_on_a_gap_metric_names_the_gap_farthest_from_zero(sweep: Path):
    """val/train_eval_gap is -0.2 / batch size for the batch norms and 0 for layer: the worst is at batch size 2,
    although -0.1 is the lowest value (lower is not better for a gap)."""
    out = main([str(sweep), "--metric", "val/train_eval_gap"])

    sentence = (out / "summary.md").read_text().split("## small_batch\n\n")[1].splitlines()[0]
    # a gap of accuracies is a share: stated in points; every seed agreed, so the CI is 0
    assert sentence.startswith(
        ("At batch size 2, batch_masked is 10 +/- 0 points ", "At batch size 2, batch is 10 +/- 0 points ")
    )
    assert "below layer (transformer, val/train_eval_gap -0.1 vs 0;" in sentence


def test_difference_ci_of_an_empty_side_has_no_seeds():
    """Nothing finite on one side: no estimate, and n = 0 (a table must not count a seed that is not there)."""
    for a, b in (({0: 1.0, 1: 2.0}, {}), ({}, {0: 1.0}), ({0: 1.0}, {0: math.nan})):
        est = difference_ci(a, b)
        assert math.isnan(est.mean) and math.isnan(est.ci) and est.n == 0


def test_difference_ci_is_the_paired_t_interval_or_welchs():
    a, b = [0.60, 0.66, 0.69], [0.80, 0.82, 0.84]
    paired = difference_ci(dict(enumerate(a)), dict(enumerate(b)))
    low, high = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert paired.method == "paired" and paired.mean == pytest.approx((low + high) / 2)
    assert paired.ci == pytest.approx((high - low) / 2)

    c = [0.79, 0.80, 0.81, 0.85]  # other seeds: unpaired
    welch = difference_ci(dict(enumerate(a)), {s + 10: v for s, v in enumerate(c)})
    low, high = stats.ttest_ind(a, c, equal_var=False).confidence_interval(0.95)
    assert welch.method == "welch" and welch.ci == pytest.approx((high - low) / 2)
    assert welch.mean == pytest.approx(np.mean(a) - np.mean(c))
    assert mean_ci([0.5]).n == 1 and math.isnan(mean_ci([0.5]).ci)


def catalogue(root: Path) -> Path:
    """Fake runs of several catalogue entries, each with the data of one figure kind."""
    small_batch_sweep(root / "small_batch")
    for norm in ("layer", "batch_step"):
        for seed in (0, 1):
            grow = 1.0 if norm == "layer" else 2.0
            ppl = {f"test/ppl@len={n}": 20 * (1 + grow * n / 256) + seed for n in (32, 64, 128)}
            write_job(
                root / "length" / f"{norm}-{seed}",
                norm=norm,
                seed=seed,
                experiment="length_extrapolation",
                metrics={"val/ppl": 20.0 + seed + grow, **ppl},
            )
        for seed, spread in [(s, sp) for s in (0, 1) for sp in (0.0, 0.5)]:
            write_job(
                root / "padding" / f"{norm}-{spread}-{seed}",
                norm=norm,
                seed=seed,
                experiment="padding",
                metrics={"val/acc": 0.8 - spread / (2 if norm == "layer" else 1) + seed / 100},
                data_stats={"padding_share": 0.1 + spread},
                extra_overrides={"data.length_spread": spread},
                config_changes={"data.length_spread": spread},
            )
    for norm, leak in [("layer", 0.0), ("batch_masked", 0.3), ("batch", 0.5)]:
        for seed in (0, 1, 2):
            write_job(
                root / "leak" / f"{norm}-{seed}",
                norm=norm,
                seed=seed,
                model="lstm",
                experiment="causal_leak",
                metrics={"val/acc": 0.7},
                config_changes={"report.metric": "probe/causal_leak"},
                instruments={"probe/causal_leak": leak + seed / 100},
            )
    for sync in (False, True):
        for seed in (0, 1):
            for norm, acc in [("batch_masked", 0.70 + 0.05 * sync), ("layer", 0.72)]:
                write_job(
                    root / "ddp" / f"{norm}-{sync}-{seed}",
                    norm=norm,
                    seed=seed,
                    experiment="ddp",
                    metrics={"val/acc": acc + seed / 100},
                    train_step_s=0.03 + 0.05 * sync * (norm != "layer") + seed / 1000,
                    extra_overrides={"norm.sync": sync},
                    config_changes={"norm.sync": sync, "report.contrast": "norm.sync"},
                )
    return root


def test_figures_follow_the_data_of_each_experiment(tmp_path: Path, capsys):
    root = catalogue(tmp_path / "multirun")
    out = main([str(root / name) for name in ("small_batch", "length", "padding", "leak", "ddp")])

    assert out == root / "small_batch" / "report"
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [
        "causal_leak-causal_leak.png",
        "ddp-sync.png",
        "length_extrapolation-test_ppl-vs-len.png",
        "padding-val_acc-vs-data.length_spread.png",
        "padding-val_acc-vs-data_stats_padding_share.png",
        "small_batch-gap-vs-data.batch_size.png",
        "small_batch-series.png",
        "small_batch-val_acc-vs-data.batch_size.png",
    ]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 200 and width > 300
    md = (out / "summary.md").read_text()
    for name in names:
        assert f"]({name})" in md
    printed = capsys.readouterr().out
    assert "skipped figure 'causal-leak probe': no finished run reports probe/causal_leak" in printed
    assert "Figures not drawn: metric vs batch size (the batch size is not swept)" in md.split("## ddp")[1]
    # each entry's sentence, from its numbers
    assert "At length spread 0.5, batch_step is 25 +/- 0 points below layer (transformer, val/acc 0.305 vs" in md
    assert (
        "For transformer, batch_step is 1 +/- 0 perplexity higher than layer "
        "(val/ppl 22.5 vs 21.5; paired over 2 seeds)." in md
    )
    # ddp names its contrast in the config (report.contrast: norm.sync): synced vs local within batch_masked,
    # not the 1.5 points between batch_masked and layer at sync False
    ddp_sentence = md.split("## ddp\n\n")[1].splitlines()[0]
    assert ddp_sentence.startswith(
        "For transformer, batch_masked (sync False) is 5 +/- 0 points below batch_masked (sync True)"
    )
    # the sync's cost per training step, beside the whole job's wall time; entries without step times have none
    ddp = {(r["norm"], r["norm.sync"]): r for r in read_csv(out / "summary.csv") if r["experiment"] == "ddp"}
    assert float(ddp[("batch_masked", "True")]["train_step_s:mean"]) == pytest.approx(0.0805)
    assert float(ddp[("batch_masked", "False")]["train_step_s:mean"]) == pytest.approx(0.0305)
    assert "| train_step_s (mean ± 95% CI) |" in md.split("## ddp")[1] and "train_step_s" not in md.split("## ddp")[0]
    # causal_leak names its metric in the config (report.metric); lower is better there
    assert (
        "For lstm, batch is 0.5 +/- 0 (RMS feature change) higher than layer "
        "(probe/causal_leak 0.51 vs 0.01; paired over 3 seeds)." in md
    )


def test_refuses_runs_that_differ_in_an_unswept_config_value(tmp_path: Path, capsys):
    write_job(tmp_path / "a", norm="layer", seed=0, metrics={"val/acc": 0.8})
    write_job(tmp_path / "b", norm="batch", seed=0, metrics={"val/acc": 0.7}, config_changes={"optim.lr": 0.003})
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: experiment small_batch: runs differ in optim.lr (0.001, 0.003), which is neither swept "
        "nor the norm; report them separately or sweep optim.lr"
    )
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("model", "error: experiment small_batch: runs differ in model (lstm, transformer), which is neither swept"),
        ("duplicate", "error: experiment small_batch: two runs of data.batch_size=32 norm=layer seed=0 ("),
        ("missing_dir", "error: {root}/nope is not a directory; pass output dirs of train.py"),
        ("no_jobs", "error: {root}/empty holds no Hydra job dir (a folder with .hydra/config.yaml) of train.py"),
        ("metric", "error: --metric val/f1 is not reported by any run; the runs report val/acc"),
    ],
)
def test_bad_input_is_one_line(setup: str, message: str, tmp_path: Path, capsys):
    root = tmp_path / "runs"
    write_job(root / "a", norm="layer", seed=0, metrics={"val/acc": 0.8})
    args = [str(root)]
    if setup == "model":
        write_job(root / "b", norm="layer", seed=1, model="lstm", metrics={"val/acc": 0.7})
    elif setup == "duplicate":
        write_job(tmp_path / "again" / "a", norm="layer", seed=0, metrics={"val/acc": 0.8}, batch_size=16)
        write_job(root / "b", norm="layer", seed=0, metrics={"val/acc": 0.8}, batch_size=16)
        write_job(root / "c", norm="layer", seed=0, metrics={"val/acc": 0.8})
        args = [str(root)]
    elif setup == "metric":
        args = [str(root), "--metric", "val/f1"]
    elif setup == "missing_dir":
        args = [str(root), str(tmp_path / "nope")]
    else:
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        args = [str(tmp_path / "empty")]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(root=tmp_path)) and len(err.strip().splitlines()) == 1, err


def test_wandb_report_run_holds_the_tables_and_figures_offline(sweep: Path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    out = main([str(sweep), "--wandb"])

    (run_dir,) = sorted((out / "wandb").glob("offline-run-*"))
    run = offline_run(run_dir)
    assert (run["project"], run["group"], run["job_type"], run["exit_code"]) == (
        "normbench",
        "small_batch",
        "report",
        0,
    )
    assert run["config"]["swept"] == ["data.batch_size"] and run["config"]["metric"] == "val/acc"
    history = run["history"]
    assert (history["tables/summary/nrows"], history["tables/runs/nrows"]) == (6, 19)
    assert history["tables/failed_and_missing/nrows"] == 2
    table = (run_dir / "files" / history["tables/summary/path"]).read_text()
    assert '"val/acc:ci95"' in table and '"batch_masked"' in table
    for name in ("val_acc-vs-data.batch_size", "gap-vs-data.batch_size", "series"):
        assert history[f"figures/{name}/_type"] == "image-file"
        assert (run_dir / "files" / history[f"figures/{name}/path"]).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_report_of_a_tiny_catalogue_entry_run_through_hydra_multirun(mr_file: Path, tmp_path: Path):
    """`python train.py -m experiment=small_batch` with its sweep cut down, then `python -m normbench.report`."""
    sweep_dir = tmp_path / "multirun"
    tiny = [
        "model.d_model=32",
        "model.d_ff=64",
        "model.n_layers=1",
        "data.vocab_size=300",
        "trainer.limit_train_batches=8",
        "trainer.max_epochs=1",
    ]
    # the entry's model and learning-rate grid cut to one value each
    sweep = ["-m", "experiment=small_batch", "model=transformer", "optim.lr=1e-3"]
    sweep += ["norm=batch_masked,layer", "data.batch_size=8,16", "seed=0,1"]
    args = [*sweep, *tiny, "logger=none", "callbacks=none", "checkpoint.every_n_steps=0", "checkpoint.save_best=false"]
    long_tag = f"tags=[{'a' * 250}]"  # the job dir names would pass the 255-byte limit of a file name
    train([*args, long_tag, f"data.path={mr_file}", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    jobs = [job for job in sweep_dir.iterdir() if job.is_dir()]
    assert len(jobs) == 8 and all(len(job.name.encode()) <= 250 for job in jobs)
    overrides = {job: (job / ".hydra" / "overrides.yaml").read_text() for job in jobs}
    # a run killed before it wrote results.json
    killed = next(job for job, text in overrides.items() if "- norm=layer\n" in text and "- seed=1\n" in text)
    (killed / "results.json").unlink()

    report = [sys.executable, "-m", "normbench.report", str(sweep_dir)]
    proc = subprocess.run(report, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(proc.stdout.strip().splitlines()[-1])
    assert out == sweep_dir / "report"

    rows = read_csv(out / "results.csv")
    assert len(rows) == 8 and sorted(r["status"] for r in rows) == ["missing"] + ["ok"] * 7
    seen = {(r["norm"], r["data.batch_size"], r["seed"]) for r in rows}
    assert seen == {(n, b, s) for n in ("batch_masked", "layer") for b in ("8", "16") for s in ("0", "1")}
    for row in rows:
        if row["status"] == "ok":
            assert 0.0 <= float(row["val/acc"]) <= 1.0
    summary = {(r["norm"], r["data.batch_size"]): r for r in read_csv(out / "summary.csv")}
    assert len(summary) == 4
    for (norm, bs), row in summary.items():
        seeds = [float(r["val/acc"]) for r in rows if (r["norm"], r["data.batch_size"]) == (norm, bs) and r["val/acc"]]
        assert int(row["n_seeds"]) == len(seeds) and float(row["val/acc:mean"]) == pytest.approx(np.mean(seeds))
        if len(seeds) == 2:
            half_width = T_975[1] * np.std(seeds, ddof=1) / math.sqrt(2)
            assert float(row["val/acc:ci95"]) == pytest.approx(half_width)
        else:
            assert row["val/acc:ci95"] == ""
    md = (out / "summary.md").read_text()
    assert "## small_batch" in md and "points" in md and "| small_batch | missing | layer | 1 |" in md
    assert {r["experiment"] for r in rows} == {"small_batch"}
    png = out / "small_batch-test_acc-vs-data.batch_size.png"  # the entry's headline: test/acc (report.metric)
    assert png.read_bytes()[:8] == PNG_MAGIC and f"]({png.name})" in md


def test_a_sampled_instrument_is_the_mean_of_its_samples_over_the_second_half_of_training(tmp_path: Path) -> None:
    """The fluctuation's last logged value is one batch's: the run's value is the mean from the middle step on."""
    series = {"stats/scale_shift": [[1, 9.0], [6, 0.5], [11, 0.2], [16, 0.4]], "stats/l0/scale_shift": [[1, 1.0]]}
    write_job(tmp_path / "a", norm="batch_masked", seed=0, metrics={"val/acc": 0.7},
              instruments={"stats/scale_shift": 0.4}, series=series)  # fmt: skip
    write_job(tmp_path / "b", norm="batch_masked", seed=1, metrics={"val/acc": 0.7},
              series={"grad_norm/max_total": [[0, 3.0], [10, 2.0]]})  # fmt: skip
    from normbench.report.runs import load_runs

    values = {run.seed: run.values() for run in load_runs([tmp_path])}
    # steps 1..16: the middle is 8.5, so the samples at 11 and 16, not the last one (0.4) and not step 1's 9.0
    assert values[0]["stats/scale_shift"] == pytest.approx((0.2 + 0.4) / 2)
    assert "stats/l0/scale_shift" not in values[0]  # a headline key only
    assert values[1]["grad_norm/max_total"] == 2.0  # an instrument that is not sampled: its last value


def test_sentence_leaves_out_the_keys_a_group_never_set():
    """Arms of one entry set different keys (an LSTM has no model.causal, a classification arm no eval_tokens):
    a key that is None names nothing, shared or not; the keys that differ still name each group."""
    from normbench.report.confidence import Estimate
    from normbench.report.summary import Comparison, Group

    lstm = Group((("data", "mr"), ("data.eval_tokens", None), ("model", "lstm"), ("model.causal", None)), "batch")
    transformer = Group(
        (("data", "mr"), ("data.eval_tokens", None), ("model", "transformer"), ("model.causal", False)), "batch"
    )
    sentence = Comparison(transformer, lstm, "stats/scale_shift", Estimate(0.5, 0.1, 4, "paired")).sentence()
    assert sentence.startswith("At data mr, batch (model lstm) is 0.50 +/- 0.10 ")
    assert "than batch (model transformer, causal False) (" in sentence
    assert "None" not in sentence
