"""Figures that show every norm: series equal to each other stay visible and say so, CIs sit side by side, axes
are labelled in words. Asserted on the matplotlib objects (the report tests check the files)."""

from pathlib import Path

import numpy as np
import pytest
from fake_runs import write_job
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from normbench.report import figures
from normbench.report.figures import FigureInput, _draw_lines, _save
from normbench.report.labels import metric_words, setting_words
from normbench.report.runs import load_runs, sweep_settings

#: the train-eval gap by norm: three norms exactly 0 at every batch size (no batch statistics in eval)
GAPS = {
    "batch": {4: [-0.1, -0.2], 16: [-0.05, -0.07]},
    **{norm: {4: [0.0, 0.0], 16: [0.0, 0.0]} for norm in ("power", "batch_renorm", "layer")},
}


def _drawn(lines: dict) -> tuple[Figure, dict[str, object]]:
    fig = Figure()
    ax = fig.subplots()
    _draw_lines(ax, lines)
    _save(fig, Path("/dev/null"))
    return fig, {bars.get_label(): bars.lines[0] for bars in ax.containers}  # label -> the line of means


def _figures_drawn(tmp_path: Path, monkeypatch, experiment: str, metric: str | None, draw) -> tuple[list, list[Figure]]:
    """``draw``'s files over the runs under ``tmp_path/sweep``, and the matplotlib figures it saved."""
    runs = load_runs([tmp_path / "sweep"])
    fi = FigureInput(experiment, runs, sweep_settings(runs), metric, tmp_path / "out")
    fi.out.mkdir()
    saved: list[Figure] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or _save(fig, path))
    return draw(fi), saved


def test_identical_series_are_each_drawn_apart_with_their_own_marker_and_named_in_the_legend() -> None:
    fig, drawn = _drawn({norm: (norm, points) for norm, points in GAPS.items()})
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["batch", "power", "batch_renorm (identical to power)", "layer (identical to power)"]
    zeros = [drawn[label] for label in legend[1:]]
    assert all(list(line.get_ydata()) == [0.0, 0.0] for line in zeros)  # the values stay exact ...
    shown_x = [line.get_transform().transform(line.get_xydata())[:, 0] for line in zeros]
    gaps = np.diff(np.array(shown_x), axis=0)
    assert np.all(gaps > 1.0)  # ... but each is shifted sideways (display pixels) from the one before it
    assert len({line.get_marker() for line in zeros}) == 3
    # the shifted artists do not move the axis limits: they span the data and the CIs
    low = np.mean(GAPS["batch"][4]) - 12.706204736174698 * np.std(GAPS["batch"][4], ddof=1) / np.sqrt(2)
    assert ax.get_ylim()[0] < low < ax.get_ylim()[1] and ax.get_xlim()[0] < 4 < 16 < ax.get_xlim()[1]


def test_few_points_get_ci_error_bars_many_get_bands() -> None:
    fig, _ = _drawn({"layer": ("layer", {4: [0.5, 0.6], 16: [0.6, 0.7]})})
    (ax,) = fig.axes
    assert ax.containers[0].has_yerr and not any(isinstance(c, PolyCollection) for c in ax.collections)
    fig, _ = _drawn({"layer": ("layer", {float(s): [0.5 + s / 100, 0.6 + s / 100] for s in range(20)})})
    (ax,) = fig.axes
    assert not ax.containers[0].has_yerr and any(isinstance(c, PolyCollection) for c in ax.collections)


def test_train_eval_gap_figure_lists_every_norm_and_labels_its_axes_in_words(tmp_path: Path, monkeypatch) -> None:
    for num, (norm, points) in enumerate(GAPS.items()):
        for bs, gaps in points.items():
            for seed, gap in enumerate(gaps):
                write_job(
                    tmp_path / "sweep" / f"{num}{bs}{seed}", norm=norm, seed=seed, batch_size=bs,
                    metrics={"val/acc": 0.7, "val/train_eval_gap": gap},
                )  # fmt: skip
    (png,), saved = _figures_drawn(
        tmp_path, monkeypatch, "train_eval_gap", "val/acc", figures.train_eval_gap_vs_batch_size
    )
    assert png.name == "train_eval_gap-gap-vs-data.batch_size.png" and png.stat().st_size > 0
    (ax,) = saved[0].axes
    assert ax.get_xlabel() == "batch size"
    assert ax.get_ylabel().replace("\n", " ") == "validation train-eval gap (acc. batch − running stats)"
    legend = " | ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert legend == "batch | power | batch_renorm (identical to power) | layer (identical to power)"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("val/acc", "validation accuracy"),
        ("test/ppl@len=128", "test perplexity at test length 128"),
        ("test/acc_batch_stats@eval_batch=1", "test accuracy with batch statistics at evaluation batch size 1"),
        ("probe/partner_dependence", "batch-partner dependence (logit std)"),
        ("val/new_metric", "validation new metric"),
    ],
)
def test_metric_words(name: str, words: str) -> None:
    assert metric_words(name) == words


def test_setting_words() -> None:
    assert [setting_words(k) for k in ("data.batch_size", "data_stats/train_padding_share", "data.new_knob")] == [
        "batch size",
        "padding share of the training tokens",
        "new knob",
    ]


def test_a_bar_of_height_zero_is_marked(tmp_path: Path, monkeypatch) -> None:
    for norm, leak in (("batch", 0.3), ("layer", 0.0)):
        for seed in range(2):
            write_job(tmp_path / "sweep" / f"{norm}{seed}", norm=norm, seed=seed, metrics={"probe/causal_leak": leak})
    _, saved = _figures_drawn(tmp_path, monkeypatch, "causal_leak", None, figures.causal_leak)
    (ax,) = saved[0].axes
    assert [(t.get_text(), t.xy) for t in ax.texts] == [("0", (1.0, 0))]  # above layer's bar only
    assert ax.get_ylabel().replace("\n", " ") == "causal leak (largest change of earlier outputs)"


def test_series_by_contrast_is_a_grid_of_a_row_per_contrast_value_and_one_legend(tmp_path: Path, monkeypatch) -> None:
    report = {"report.series": "convergence/val_acc", "report.contrast": "data.input_transform"}
    for transform, start in (("none", 0.2), ("standardize", 0.6)):
        for scales in ("null", "[1,100]"):
            for norm, lift in (("none", 0.0), ("layer", 0.05)):
                for seed in (0, 1):
                    write_job(
                        tmp_path / f"{transform}-{scales}-{norm}-{seed}",
                        norm=norm,
                        seed=seed,
                        experiment="input_scale",
                        metrics={"val/acc": start},
                        series={"convergence/val_acc": [[1, start + lift], [2, start + lift + 0.1 + seed / 100]]},
                        extra_overrides={"data.input_transform": transform, "data.channel_scales": scales},
                        config_changes=report,
                    )
    runs = load_runs([tmp_path])
    saved: list[Figure] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    fi = FigureInput("input_scale", runs, sweep_settings(runs), "val/acc", tmp_path / "out")
    (png,) = figures.series_by_contrast(fi)
    assert png.name == "input_scale-convergence_val_acc-by-data.input_transform.png"
    (fig,) = saved
    axes = fig.axes
    assert len(axes) == 2 * 2  # rows: none, standardize; columns: the two channel scales (one model)
    titles = [ax.get_title() for ax in axes]
    assert titles[0].endswith("input transform none") and titles[2].endswith("input transform standardize")
    assert all("channel scales" in t for t in titles)
    legends = [ax.get_legend() for ax in axes]
    labelled = [leg for leg in legends if leg is not None and leg.get_texts()]
    assert len(labelled) == 0  # _save (stubbed here) draws the one legend, beside the top-right panel
    assert [ax.get_legend_handles_labels()[1] for ax in axes][1] == ["none", "layer"]
    (first,) = [c for c in axes[0].containers if c.get_label() == "layer"]
    assert list(first.lines[0].get_ydata()) == pytest.approx([0.25, 0.355])  # mean over the two seeds

    runs_without = load_runs([tmp_path / "none-null-none-0"])
    with pytest.raises(figures.SkipFigure, match="no finished run carries the series"):
        figures.series_by_contrast(FigureInput("input_scale", runs_without, [], "val/acc", tmp_path / "out"))


def test_fluctuation_vs_gap_is_one_point_per_run_with_the_correlation_computed_by_hand(
    tmp_path: Path, monkeypatch
) -> None:
    # (stats/scale_shift, val/loss_batch_stats - val/loss) per run; layer norm has no batch statistics: no point
    points = {"transformer": [(0.1, 0.01), (0.2, 0.03)], "lstm": [(0.3, 0.02), (0.4, 0.06)]}
    for model, pairs in points.items():
        for seed, (dist, gap) in enumerate(pairs):
            write_job(
                tmp_path / "sweep" / f"{model}{seed}", norm="batch_masked", seed=seed, model=model,
                metrics={"val/acc": 0.7, "val/loss": 0.5, "val/loss_batch_stats": 0.5 + gap},
                series={"stats/scale_shift": [[0, dist]]},
            )  # fmt: skip
    layer = {"val/loss": 0.5, "val/loss_batch_stats": 0.5}
    write_job(tmp_path / "sweep" / "layer", norm="layer", seed=0, metrics=layer)
    (png,), saved = _figures_drawn(
        tmp_path, monkeypatch, "batch_stat_fluctuation", "stats/scale_shift", figures.fluctuation_vs_gap
    )
    assert png.name == "batch_stat_fluctuation-fluctuation-vs-gap.png" and png.stat().st_size > 0
    (ax,) = saved[0].axes
    drawn = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert drawn == {
        "batch_masked (lstm, mr)": [[0.3, pytest.approx(0.02)], [0.4, pytest.approx(0.06)]],
        "batch_masked (transformer, mr)": [[0.1, pytest.approx(0.01)], [0.2, pytest.approx(0.03)]],
    }
    xs, ys = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.01, 0.03, 0.02, 0.06])
    dx, dy = xs - xs.mean(), ys - ys.mean()
    r = (dx * dy).sum() / np.sqrt((dx**2).sum() * (dy**2).sum())
    assert f"Pearson r {r:.2f} (95% CI" in ax.get_title() and ax.get_title().endswith(", 4 runs")
