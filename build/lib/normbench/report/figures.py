"""The report's PNG figures, one function per kind, each drawn only when the runs hold its data.

Every kind takes a `FigureInput` (one experiment's runs) and returns the files it wrote, or raises
`SkipFigure` with the reason (logged in summary.md) when the runs lack what it needs. Lines and bars
are means over seeds with 95% CI bands/bars; one panel per model; one colour per norm in every figure.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from matplotlib.transforms import Transform, offset_copy  # noqa: E402

from normbench.instruments.metrics import (  # noqa: E402
    BATCH_STATS_LOSS_KEY,
    CAUSAL_LEAK_KEY,
    FLUCTUATION_KEY,
    TRAIN_EVAL_GAP_KEY,
)
from normbench.norm_kinds import BUILT_IN  # noqa: E402
from normbench.report.confidence import mean_ci  # noqa: E402
from normbench.report.labels import metric_words, setting_words  # noqa: E402
from normbench.report.runs import Run, configured  # noqa: E402
from normbench.report.summary import Group, group_runs, norm_order, step_timed  # noqa: E402

LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")  # one per norm, beside its colour
DODGE_POINTS = 4.0  # sideways shift between neighbouring series ...
DODGE_WIDTH_POINTS = 16.0  # ... and at most this between the outermost two (inside the axes' 5% margins)
LEGEND_INCHES_PER_CHAR = 0.055  # width of a legend character at fontsize 7
ERROR_BAR_POINTS = 8  # a series with at most this many x values gets CI error bars, more: a CI band
MARKER_INTERLEAVE = 4  # a longer series marks every 4th point, each series starting at another one
HATCHES = ("", "//", "..", "xx")


class SkipFigure(Exception):
    """The runs lack the data of this figure kind; the message says what is missing."""


@dataclass
class FigureInput:
    experiment: str
    runs: list[Run]
    swept: list[str]
    metric: str | None
    out: Path

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def path(self, kind: str) -> Path:
        return self.out / re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{self.experiment}-{kind}.png".replace("/", "_"))


def norm_color(norm: str) -> str:
    return f"C{norm_order(norm)[0] % 10}" if norm in BUILT_IN else "black"


def _is_numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_swept(fi: FigureInput) -> list[str]:
    return [k for k in fi.swept if all(_is_numeric(r.settings.get(k)) for r in fi.runs)]


def batch_keys(fi: FigureInput) -> list[str]:
    return [k for k in numeric_swept(fi) if k.rsplit(".", 1)[-1] == "batch_size"]


def _require_metric(fi: FigureInput, metric: str | None) -> str:
    if metric is None or not any(metric in r.values() for r in fi.ok_runs):
        raise SkipFigure(f"no finished run reports {metric or 'a metric'}")
    return metric


def _panels(
    fi: FigureInput, rows: int, title: str, has: Callable[[Run], bool]
) -> tuple[Figure, list[str], list[list[Axes]]]:
    """A figure with a row per metric and a column per model whose runs have the data (``has``)."""
    models = sorted({r.model for r in fi.ok_runs if has(r)}) or ["-"]
    fig = Figure(figsize=(4.8 * len(models), 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, len(models), squeeze=False)
    fig.suptitle(textwrap.fill(title, 60 * len(models)))
    return fig, models, axes


def _other_settings(group: Group, skip: Iterable[str] = ()) -> str:
    """The group's settings besides the model (the panel) and ``skip`` (the x axis): ``sync=True``."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in group.settings if k != "model" and k not in skip)


def _label(group: Group, skip: Iterable[str]) -> str:
    return ", ".join(filter(None, [group.norm, _other_settings(group, skip)]))


def _identical_to(series: dict[str, tuple[list[float], list[float]]]) -> dict[str, str]:
    """``{label: first label}`` for each series whose points equal an earlier one's exactly (several norms at 0)."""
    first: dict[tuple, str] = {}
    same: dict[str, str] = {}
    for label, (xs, means) in series.items():
        key = (tuple(xs), tuple(means))
        if key in first:
            same[label] = first[key]
        else:
            first[key] = label
    return same


def _dodge(ax: Axes, index: int, count: int) -> Transform:
    """Data coordinates shifted sideways by a few points per series, so equal points and their CI bars sit
    side by side instead of on top of each other (the shift is in points: it reads the same on a log axis)."""
    spacing = min(DODGE_POINTS, DODGE_WIDTH_POINTS / max(count - 1, 1))
    return offset_copy(ax.transData, fig=ax.figure, x=(index - (count - 1) / 2) * spacing, y=0, units="points")


def _draw_lines(ax: Axes, lines: dict[str, tuple[str, dict[float, list[float]]]]) -> None:
    """``{label: (norm, {x: values over seeds})}`` -> mean lines with 95% CIs, every series visible.

    A marker shape per norm besides its colour, and a series equal to an earlier one says so in the legend
    (``layer (identical to power)``). With few x values the series are dodged sideways by a few points and
    their CIs are error bars, so none hides another; with many (a series over training steps) the lines stay
    in place with light CI bands, and each series puts its markers on other points than its neighbours'.
    """
    styles: dict[str, int] = defaultdict(int)
    extent: list[tuple[float, float]] = []  # the points in data coordinates: dodged artists do not set the limits
    ordered = sorted(lines.items(), key=lambda item: (norm_order(item[1][0]), item[0]))
    estimates = {label: {x: mean_ci(points[x]) for x in sorted(points)} for label, (_, points) in ordered}
    same = _identical_to({label: (list(e), [v.mean for v in e.values()]) for label, e in estimates.items()})
    interleave = min(len(ordered), MARKER_INTERLEAVE)
    at_same_xs: dict[tuple, list[str]] = defaultdict(list)  # dodged among the series drawn at the same x values
    for label, points in estimates.items():
        at_same_xs[tuple(points)].append(label)
    for index, (label, (norm, _)) in enumerate(ordered):
        xs, est = list(estimates[label]), list(estimates[label].values())
        means = [e.mean for e in est]
        errors = [e.ci if e.has_ci else 0.0 for e in est]
        extent += [(x, m + sign * e) for x, m, e in zip(xs, means, errors, strict=True) for sign in (-1, 1)]
        style = LINESTYLES[styles[norm] % len(LINESTYLES)]
        styles[norm] += 1
        few, neighbours = len(xs) <= ERROR_BAR_POINTS, at_same_xs[tuple(xs)]
        common = {
            "color": norm_color(norm),
            "transform": _dodge(ax, neighbours.index(label), len(neighbours)) if few else ax.transData,
        }
        ax.errorbar(
            xs, means, yerr=errors if few else None, fmt=style, marker=MARKERS[norm_order(norm)[0] % len(MARKERS)],
            ms=4, capsize=2, elinewidth=0.8, markevery=None if few else (index % interleave, interleave),
            label=f"{label} (identical to {same[label]})" if label in same else label, **common,
        )  # fmt: skip
        if not few:
            low = [m - e for m, e in zip(means, errors, strict=True)]
            high = [m + e for m, e in zip(means, errors, strict=True)]
            ax.fill_between(xs, low, high, alpha=0.12, linewidth=0, **common)
    if extent:
        ax.update_datalim(extent)
        ax.autoscale_view()


def _save(fig: Figure, path: Path) -> Path:
    """Legends beside their panels (not over the data), the figure widened by as much as they need."""
    longest = 0
    for ax in fig.axes:
        ax.set_ylabel(textwrap.fill(ax.get_ylabel(), 36))  # a long metric name on two lines, not cut off
        if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
            longest = max(longest, *(len(label) for label in ax.get_legend_handles_labels()[1]))
        ax.grid(alpha=0.3)
    if longest and fig.axes:
        columns = fig.axes[0].get_subplotspec().get_gridspec().ncols
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + columns * (0.7 + LEGEND_INCHES_PER_CHAR * longest), height)
    fig.savefig(path, dpi=110)
    return path


def _log2_axis(ax: Axes, lines: dict[str, tuple[str, dict[float, list[float]]]]) -> None:
    """Batch sizes (2, 8, 32, 128) evenly spaced, each tick the value itself."""
    ax.set_xscale("log", base=2)
    xs = sorted({x for _, points in lines.values() for x in points})
    ax.set_xticks(xs, [f"{x:g}" for x in xs], minor=False)
    ax.set_xticks([], minor=True)


def line_figure(
    fi: FigureInput,
    metric: str,
    x_of: Callable[[Group], float | None],
    x_key: str,
    kind: str,
    label_skip: Sequence[str],
    log2: bool = False,
) -> Path:
    """``metric`` vs ``x_of(group)``: a line per norm (and other setting), a panel per model."""
    title = f"{fi.experiment}: {metric_words(metric)} vs {setting_words(x_key)}"
    fig, models, axes = _panels(fi, 1, title, lambda r: metric in r.values())
    for ax, model in zip(axes[0], models, strict=True):
        lines: dict[str, tuple[str, dict[float, list[float]]]] = {}
        for group in group_runs(r for r in fi.ok_runs if r.model == model):
            x, values = x_of(group), list(group.per_seed(metric).values())
            if x is None or not values:
                continue
            lines.setdefault(_label(group, label_skip), (group.norm, defaultdict(list)))[1][x].extend(values)
        _draw_lines(ax, lines)
        if log2:
            _log2_axis(ax, lines)
        ax.set(title=model, xlabel=setting_words(x_key), ylabel=metric_words(metric))
    return _save(fig, fi.path(kind))


def _setting_x(key: str) -> Callable[[Group], float | None]:
    return lambda group: dict(group.settings).get(key)


def metric_vs_batch_size(fi: FigureInput) -> list[Path]:
    metric = _require_metric(fi, fi.metric)
    keys = batch_keys(fi)
    if not keys:
        raise SkipFigure("the batch size is not swept")
    return [line_figure(fi, metric, _setting_x(k), k, f"{metric}-vs-{k}", [k], log2=True) for k in keys]


def metric_vs_numeric_setting(fi: FigureInput) -> list[Path]:
    """Any other swept number (a length spread, a test length, a learning rate ...)."""
    metric = _require_metric(fi, fi.metric)
    keys = [k for k in numeric_swept(fi) if k not in batch_keys(fi) and k != "seed"]
    if not keys:
        raise SkipFigure("no swept numeric setting besides the batch size")
    return [line_figure(fi, metric, _setting_x(k), k, f"{metric}-vs-{k}", [k]) for k in keys]


def metric_vs_padding(fi: FigureInput) -> list[Path]:
    """``metric`` vs each padding statistic of the data (``data_stats`` keys naming padding) that varies."""
    metric = _require_metric(fi, fi.metric)
    stats = sorted({k for r in fi.ok_runs for k in r.values() if k.startswith("data_stats/") and "pad" in k})
    stats = [s for s in stats if len({r.values().get(s) for r in fi.ok_runs}) > 1]
    if not stats:
        raise SkipFigure("no padding statistic in data_stats varies between the runs")

    def mean_stat(stat: str) -> Callable[[Group], float | None]:
        def x_of(group: Group) -> float | None:
            values = [r.values()[stat] for r in group.ok_runs if stat in r.values()]
            return sum(values) / len(values) if values else None

        return x_of

    skip = numeric_swept(fi)
    return [line_figure(fi, metric, mean_stat(s), s.split("/", 1)[1], f"{metric}-vs-{s}", skip) for s in stats]


def train_eval_gap_vs_batch_size(fi: FigureInput) -> list[Path]:
    metric = _require_metric(fi, TRAIN_EVAL_GAP_KEY)
    keys = batch_keys(fi)
    if not keys:
        raise SkipFigure("the batch size is not swept")
    return [line_figure(fi, metric, _setting_x(k), k, f"gap-vs-{k}", [k], log2=True) for k in keys]


AT_METRIC = re.compile(r"^(?P<name>[^@]+)@(?P<key>[^=]+)=(?P<value>.+)$")


def metric_at_settings(fi: FigureInput) -> list[Path]:
    """Metrics evaluated at a setting (``test/ppl@len=128``): the metric vs that setting."""
    found: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for name in {k for r in fi.ok_runs for k in r.values()}:
        match = AT_METRIC.match(name)
        if match:
            try:
                found[(match["name"], match["key"])][name] = float(match["value"])
            except ValueError:
                continue
    found = {k: v for k, v in found.items() if len(v) > 1}
    if not found:
        raise SkipFigure("no metric evaluated at two or more settings (name@key=value)")
    paths = []
    for (name, key), variants in sorted(found.items()):
        fig, models, axes = _panels(
            fi,
            1,
            f"{fi.experiment}: {metric_words(name)} vs {setting_words(key)}",
            lambda r, v=variants: any(m in r.values() for m in v),
        )
        for ax, model in zip(axes[0], models, strict=True):
            lines: dict[str, tuple[str, dict[float, list[float]]]] = {}
            for group in group_runs(r for r in fi.ok_runs if r.model == model):
                line = lines.setdefault(_label(group, []), (group.norm, defaultdict(list)))
                for variant, x in variants.items():
                    if values := list(group.per_seed(variant).values()):
                        line[1][x].extend(values)
            _draw_lines(ax, lines)
            if "batch" in key and all(x > 0 for x in variants.values()):  # an evaluation batch size
                _log2_axis(ax, lines)
            ax.set(title=model, xlabel=setting_words(key), ylabel=metric_words(name))
        paths.append(_save(fig, fi.path(f"{name}-vs-{key}")))
    return paths


def series_over_training(fi: FigureInput) -> list[Path]:
    """Instrument time series (``series`` in results.json, e.g. ``stats/var_dist``) vs the training step."""
    names = sorted({k for r in fi.ok_runs for k, points in r.series().items() if points and k.count("/") <= 1})
    if not names:
        raise SkipFigure("the runs carry no instrument series (results.json 'series')")
    title = f"{fi.experiment}: instruments over training"
    fig, models, axes = _panels(fi, len(names), title, lambda r: any(r.series().get(n) for n in names))
    for row, name in zip(axes, names, strict=True):
        for ax, model in zip(row, models, strict=True):
            lines: dict[str, tuple[str, dict[float, list[float]]]] = {}
            for group in group_runs(r for r in fi.ok_runs if r.model == model):
                for run in group.ok_runs:
                    for step, value in run.series().get(name, []):
                        lines.setdefault(_label(group, []), (group.norm, defaultdict(list)))[1][step].append(value)
            _draw_lines(ax, lines)
            ax.set(title=model, xlabel=setting_words("step"), ylabel=metric_words(name))
    return [_save(fig, fi.path("series"))]


def series_by_contrast(fi: FigureInput) -> list[Path]:
    """The entry's ``report.series`` (input_scale: ``convergence/val_acc``) over training in a grid: a row per
    value of its ``report.contrast`` key, a column per model and value of the other swept keys, a line per
    norm; a figure a reader can take in where the series figure would draw every setting in one panel."""
    name, contrast = configured(fi.runs, "report.series"), configured(fi.runs, "report.contrast")
    if name is None or contrast is None:
        raise SkipFigure("the config names no report.series and report.contrast")
    runs = [r for r in fi.ok_runs if r.series().get(name) and contrast in r.settings]
    if not runs:
        raise SkipFigure(f"no finished run carries the series {name} and the swept {contrast}")
    others = [k for k in fi.swept if k not in (contrast, "model")]

    def column(run: Run) -> tuple:
        return (run.model, *(run.settings.get(k) for k in others))

    rows = sorted({r.settings[contrast] for r in runs}, key=str)
    columns = sorted({column(r) for r in runs}, key=str)
    fig = Figure(figsize=(3.6 * len(columns), 2.8 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(columns), squeeze=False, sharex=True, sharey=True)
    fig.suptitle(f"{fi.experiment}: {metric_words(name)} over training, a row per {setting_words(contrast)}")
    for i, value in enumerate(rows):
        for j, col in enumerate(columns):
            lines: dict[str, tuple[str, dict[float, list[float]]]] = {}
            for run in (r for r in runs if r.settings[contrast] == value and column(r) == col):
                for step, point in run.series()[name]:
                    lines.setdefault(run.norm, (run.norm, defaultdict(list)))[1][step].append(point)
            ax = axes[i][j]
            _draw_lines(ax, lines)
            where = ", ".join(f"{setting_words(k)} {v}" for k, v in zip(others, col[1:], strict=True))
            ax.set_title(f"{col[0]}{', ' + where if where else ''}\n{setting_words(contrast)} {value}", fontsize=8)
            ax.set(
                xlabel=setting_words("step") if i == len(rows) - 1 else "", ylabel=metric_words(name) if j == 0 else ""
            )
            if (i, j) != (0, len(columns) - 1):  # one legend, beside the top-right panel: the same norms in each
                ax.legend(handles=[], frameon=False)
    return [_save(fig, fi.path(f"{name}-by-{contrast}"))]


def fluctuation_vs_gap(fi: FigureInput) -> list[Path]:
    """Each run's batch-statistic fluctuation against what using the batch's statistics costs it at validation
    (the loss with them minus the loss with running ones, nats: one unit for every task), one marker per model
    and dataset, one colour per norm, and their Pearson correlation with its 95% CI: whether the fluctuation
    Shen et al. (2020) blame for batch norm's failure on text is what makes the train/eval gap."""
    from scipy.stats import pearsonr

    points: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for run in fi.ok_runs:
        values = run.values()  # numbers only
        if all(k in values for k in (FLUCTUATION_KEY, "val/loss", BATCH_STATS_LOSS_KEY)):
            gap = float(values[BATCH_STATS_LOSS_KEY]) - float(values["val/loss"])
            points[(run.norm, f"{run.model}, {run.key('data')}")].append((float(values[FLUCTUATION_KEY]), gap))
    every = [p for ps in points.values() for p in ps]
    if len(every) < 3:
        raise SkipFigure(f"fewer than 3 finished runs report {FLUCTUATION_KEY} and {BATCH_STATS_LOSS_KEY}")
    kinds = sorted({kind for _, kind in points})
    fig = Figure(figsize=(5.6, 4.0), layout="constrained")
    ax = fig.subplots()
    for (norm, kind), ps in sorted(points.items(), key=lambda item: (norm_order(item[0][0]), item[0][1])):
        xs, ys = zip(*ps, strict=True)
        marker = MARKERS[kinds.index(kind) % len(MARKERS)]
        ax.scatter(xs, ys, color=norm_color(norm), marker=marker, label=f"{norm} ({kind})", alpha=0.8)
    ax.axhline(0, color="grey", linewidth=0.8)
    xs, ys = zip(*every, strict=True)
    if min(xs) > 0 and max(xs) / min(xs) > 20:  # models and tasks fluctuate on different orders of magnitude
        ax.set_xscale("log")
        # plain numbers at 1, 2 and 5 of each decade: the default labels every minor tick, and they overlap
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    title = f"{fi.experiment}: fluctuation vs train/eval gap"
    if len(set(xs)) > 1 and len(set(ys)) > 1:
        result = pearsonr(xs, ys)
        low, high = result.confidence_interval(0.95)
        title += f"\nPearson r {result.statistic:.2f} (95% CI {low:.2f} to {high:.2f}), {len(every)} runs"
    ax.set(title=title, xlabel=metric_words(FLUCTUATION_KEY), ylabel="val loss with batch minus running statistics")
    ax.title.set_fontsize(9)
    return [_save(fig, fi.path("fluctuation-vs-gap"))]


def bar_figure(fi: FigureInput, metrics: Sequence[str], kind: str, title: str) -> Path:
    """Bars per norm (grouped by the other settings), CI error bars; a row per metric, a panel per model."""
    has = lambda r: any(m in r.values() for m in metrics)  # noqa: E731
    fig, models, axes = _panels(fi, len(metrics), f"{fi.experiment}: {title}", has)
    for row, metric in zip(axes, metrics, strict=True):
        for ax, model in zip(row, models, strict=True):
            groups = group_runs(r for r in fi.ok_runs if r.model == model)
            norms = sorted({g.norm for g in groups}, key=norm_order)
            hues = sorted({_other_settings(g) for g in groups})
            width = 0.8 / max(len(hues), 1)
            for g in groups:
                est = g.estimate(metric)
                if not est.n:
                    continue
                hue = hues.index(_other_settings(g))
                x = norms.index(g.norm) - 0.4 + width * (hue + 0.5)
                err = est.ci if est.has_ci else 0.0
                hatch = HATCHES[hue % len(HATCHES)]
                ax.bar(
                    x, est.mean, width, yerr=err, capsize=3, color=norm_color(g.norm), edgecolor="black", hatch=hatch
                )
                if est.mean == 0 and err == 0:  # a bar of height 0 is invisible: say that it is there
                    ax.annotate("0", (x, 0), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
            if hues != [""]:
                handles = [
                    Patch(facecolor="white", edgecolor="black", hatch=HATCHES[i % len(HATCHES)])
                    for i in range(len(hues))
                ]
                ax.legend(handles, hues, fontsize=7)
            ax.set_xticks(range(len(norms)), norms, rotation=30)
            ax.set(title=model, ylabel=metric_words(metric))
    return _save(fig, fi.path(kind))


def causal_leak(fi: FigureInput) -> list[Path]:
    _require_metric(fi, CAUSAL_LEAK_KEY)
    return [bar_figure(fi, [CAUSAL_LEAK_KEY], "causal_leak", "causal-leak probe (train mode)")]


def sync_comparison(fi: FigureInput) -> list[Path]:
    """Runs differing in a ``...sync`` setting (DDP local vs all-reduced statistics): metric and the time of a
    training step (of the whole job where the runs did not time their steps)."""
    keys = [k for k in fi.swept if k.rsplit(".", 1)[-1] == "sync"]
    if not keys:
        raise SkipFigure("no sync setting (e.g. norm.sync) is swept")
    metric = _require_metric(fi, fi.metric)
    timing = "train_step_s" if step_timed(fi.runs) else "wall_time_s"
    return [bar_figure(fi, [metric, timing], "sync", "local vs synced batch statistics")]


FIGURE_KINDS: dict[str, Callable[[FigureInput], list[Path]]] = {
    "metric vs batch size": metric_vs_batch_size,
    "metric vs swept number": metric_vs_numeric_setting,
    "metric vs padding share": metric_vs_padding,
    "train-eval gap vs batch size": train_eval_gap_vs_batch_size,
    "metric vs evaluation setting": metric_at_settings,
    "instruments over training": series_over_training,
    "series by contrast": series_by_contrast,
    "causal-leak probe": causal_leak,
    "fluctuation vs train-eval gap": fluctuation_vs_gap,
    "local vs synced statistics": sync_comparison,
}


def draw_all(fi: FigureInput) -> tuple[list[Path], dict[str, str]]:
    """Every figure kind the runs support; returns the files and, per skipped kind, the reason."""
    fi.out.mkdir(parents=True, exist_ok=True)
    files, skipped = [], {}
    for kind, draw in FIGURE_KINDS.items():
        try:
            files.extend(draw(fi))
        except SkipFigure as reason:
            skipped[kind] = str(reason)
    return files, skipped
