"""Per experiment: runs grouped by setting and norm, mean +/- 95% CI over seeds, and the finding in one sentence.

The sentence is computed, never written: in the setting where the best per-token norm (layer, rms, ...)
is furthest ahead of the worst batch-statistic norm, it states that gap with the CI of the difference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from normbench.confidence import Estimate, difference_ci, mean_ci
from normbench.norms import NORMS, NoNorm, _BatchStatNorm
from normbench.runs import Run

#: the headline metric of an experiment when neither --metric nor the config's `report.metric` names one
PRIMARY_METRICS = ("val/acc", "test/acc", "val/ppl", "test/ppl", "val/loss", "test/loss")
#: instruments (normbench.callbacks) summarized beside the metrics; per-layer values stay in results.csv
HEADLINE_INSTRUMENTS = (
    "val/train_eval_gap",
    "probe/partner_dependence",
    "probe/causal_leak",
    "stats/mean_dist",
    "stats/var_dist",
)


def norm_kind(norm: str) -> str:
    """``batch`` (statistics over the batch), ``token`` (over each token's channels), ``none`` or ``other``."""
    cls = NORMS.get(norm)
    if cls is None:
        return "other"
    if issubclass(cls, _BatchStatNorm):
        return "batch"
    return "none" if issubclass(cls, NoNorm) else "token"


def norm_order(norm: str) -> tuple[int, str]:
    names = list(NORMS)
    return (names.index(norm) if norm in names else len(names), norm)


def metric_leaf(metric: str) -> str:
    """``test/ppl@len=128`` -> ``ppl``."""
    return metric.split("@", 1)[0].rsplit("/", 1)[-1]


def higher_is_better(metric: str) -> bool:
    return metric_leaf(metric).startswith(("acc", "f1", "auroc"))


def best_at_zero(metric: str) -> bool:
    """Gaps and probes: the nearer 0 the better, whatever the sign (val/train_eval_gap is negative when the
    batch's own statistics do worse than the running ones)."""
    leaf = metric_leaf(metric)
    return leaf.endswith("_gap") or leaf in ("causal_leak", "partner_dependence")


def is_proportion(metric: str) -> bool:
    """Accuracies are stated in percentage points."""
    return metric_leaf(metric).startswith("acc")


def fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def fmt_estimate(est: Estimate) -> str:
    if est.n == 0:
        return "-"
    return f"{fmt(est.mean)} ± {fmt(est.ci) if est.has_ci else 'n/a'}"


def setting_label(settings: Iterable[tuple[str, Any]], skip: Sequence[str] = ("model",)) -> str:
    """``(("data.batch_size", 8),)`` -> ``batch size 8``."""
    return ", ".join(f"{k.rsplit('.', 1)[-1].replace('_', ' ')} {v}" for k, v in settings if k not in skip)


@dataclass
class Group:
    """The runs of one norm at one setting of the swept keys (one run per seed)."""

    settings: tuple[tuple[str, Any], ...]
    norm: str
    runs: list[Run] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def per_seed(self, metric: str) -> dict[Any, float]:
        out = {}
        for run in self.ok_runs:
            value = run.values().get(metric)
            if value is not None and math.isfinite(value):
                out[run.seed] = value
        return out

    def estimate(self, metric: str) -> Estimate:
        return mean_ci(list(self.per_seed(metric).values()))

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.runs})


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Runs (with `settings` filled by `normbench.runs.sweep_settings`) by setting and norm, sorted."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        settings = tuple(run.settings.items())
        groups.setdefault((settings, run.norm), Group(settings, run.norm)).runs.append(run)
    return sorted(groups.values(), key=lambda g: (sortable(v for _, v in g.settings), norm_order(g.norm)))


def sortable(values: Iterable[Any]) -> tuple:
    """Numbers in numeric order, before other values in text order."""
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in values)


def step_timed(runs: Iterable[Run]) -> bool:
    """Whether a finished run reports ``train_step_s``, the median training step: the time a DDP sync adds,
    without the job's start-up and tests."""
    return any(run.ok and "train_step_s" in run.values() for run in runs)


def summary_metrics(runs: Sequence[Run]) -> list[str]:
    """Every metric the runs report, then the headline instruments present, then wall time and, where the
    runs timed their steps, the median training step."""
    metrics: set[str] = set()
    instruments: set[str] = set()
    for run in runs:
        if run.ok:
            metrics.update(k for k, v in (run.record.get("metrics") or {}).items() if v is not None)
            instruments.update(k for k in HEADLINE_INSTRUMENTS if k in (run.record.get("instruments") or {}))
    rank = {m: i for i, m in enumerate(PRIMARY_METRICS)}
    ordered = sorted(metrics, key=lambda m: (rank.get(m.split("@")[0], len(rank)), _at_order(m)))
    timing = ["wall_time_s", *(["train_step_s"] if step_timed(runs) else [])]
    return list(dict.fromkeys([*ordered, *(k for k in HEADLINE_INSTRUMENTS if k in instruments), *timing]))


def _at_order(metric: str) -> tuple:
    """Sort ``name@len=64`` before ``name@len=128``."""
    name, _, at = metric.partition("@")
    value = at.partition("=")[2]
    try:
        return (name, 0, float(value), "")
    except ValueError:
        return (name, 1, 0.0, value)


def primary_metric(runs: Sequence[Run], requested: str | None = None) -> str | None:
    """``--metric``, else the experiment config's ``report.metric``, else the first of `PRIMARY_METRICS` present."""
    present = {k for run in runs if run.ok for k in run.values()}
    configured = {run.config.get("report.metric") for run in runs} - {None}
    for candidate in [requested, *sorted(configured), *PRIMARY_METRICS]:
        if candidate and candidate in present:
            return candidate
    return None


def table_rows(groups: Sequence[Group], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (setting, norm): the settings, norm, seeds, then mean and CI half-width of each metric."""
    rows = []
    for group in groups:
        row: dict[str, Any] = dict(group.settings)
        row["norm"] = group.norm
        row["n_seeds"] = len(group.ok_runs)
        row["not_ok"] = len(group.runs) - len(group.ok_runs)
        for metric in metrics:
            est = group.estimate(metric)
            row[f"{metric}:mean"] = est.mean if est.n else None
            row[f"{metric}:ci95"] = est.ci if est.has_ci else None
        rows.append(row)
    return rows


def markdown_table(groups: Sequence[Group], swept: Sequence[str], metrics: Sequence[str]) -> str:
    header = [*swept, "norm", "seeds", *(f"{m} (mean ± 95% CI)" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        not_ok = len(group.runs) - len(group.ok_runs)
        seeds = f"{len(group.ok_runs)}" + (f" ({not_ok} not ok)" if not_ok else "")
        cells = [str(v) for _, v in group.settings] + [group.norm, seeds]
        cells += [fmt_estimate(group.estimate(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """``worst`` minus ``best`` (two groups, usually at one setting): the numbers behind the finding sentence."""

    best: Group
    worst: Group
    metric: str
    difference: Estimate

    def sentence(self) -> str:
        d, metric = self.difference, self.metric
        shared = tuple(kv for kv in self.best.settings if kv in self.worst.settings)
        if is_proportion(metric):
            ci = f"{d.ci * 100:.1f}" if d.has_ci else "n/a"
            size = f"{abs(d.mean) * 100:.1f} +/- {ci} points {'below' if d.mean < 0 else 'above'}"
        else:
            size = f"{fmt(abs(d.mean))} +/- {fmt(d.ci)} {'lower than' if d.mean < 0 else 'higher than'}"
        means = f"{fmt(self.worst.estimate(metric).mean)} vs {fmt(self.best.estimate(metric).mean)}"
        how = f"paired over {d.n} seeds" if d.method == "paired" else f"Welch, {d.n}+ seeds each"
        models = "/".join(sorted(set(self.best.models) | set(self.worst.models)))
        worst, best = self._name(self.worst, shared), self._name(self.best, shared)
        where = setting_label(shared)
        if where:
            return f"At {where}, {worst} is {size} {best} ({models}, {metric} {means}; {how})."
        return f"For {models}, {worst} is {size} {best} ({metric} {means}; {how})."

    @staticmethod
    def _name(group: Group, shared: tuple) -> str:
        own = setting_label((kv for kv in group.settings if kv not in shared), skip=())
        return f"{group.norm} ({own})" if own else group.norm


def contrast_key(runs: Sequence[Run]) -> str | None:
    """The experiment config's ``report.contrast``: a swept key whose values the sentence sets against each
    other within one norm (ddp: ``norm.sync``), where norm against norm is not the question."""
    configured = sorted({run.config.get("report.contrast") for run in runs} - {None})
    return configured[0] if configured else None


def compare(groups: Sequence[Group], metric: str, contrast: str | None = None) -> Comparison | None:
    """With a ``contrast`` key, the norm and setting where its values differ most; else the setting where
    the best per-token norm leads the worst batch-statistic norm most; without both kinds at one setting,
    where the best norm leads the worst most; with one norm per setting, the best group against the worst
    over all settings. None with fewer than two groups measured."""
    measured = [g for g in groups if g.estimate(metric).n]
    by_contrast: dict[tuple, list[Group]] = defaultdict(list)
    for group in measured:
        if contrast in dict(group.settings):
            by_contrast[(group.norm, tuple(kv for kv in group.settings if kv[0] != contrast))].append(group)
    by_setting: dict[tuple, list[Group]] = defaultdict(list)
    for group in measured:
        by_setting[group.settings].append(group)
    sign = 1.0 if higher_is_better(metric) else -1.0

    def score(group: Group) -> float:
        mean = group.estimate(metric).mean
        return -abs(mean) if best_at_zero(metric) else sign * mean

    passes = [
        [(gs, gs) for gs in by_contrast.values()],
        [
            ([g for g in gs if norm_kind(g.norm) == "token"], [g for g in gs if norm_kind(g.norm) == "batch"])
            for gs in by_setting.values()
        ],
        [(gs, gs) for gs in by_setting.values()],
        [(measured, measured)],
    ]
    for pairs in passes:
        candidates = []
        for tops, bottoms in pairs:
            best = max(tops, key=score, default=None)
            worst = min((g for g in bottoms if g is not best), key=score, default=None)
            if best is not None and worst is not None:
                candidates.append((best, worst))
        if candidates:
            best, worst = max(candidates, key=lambda c: score(c[0]) - score(c[1]))
            return Comparison(best, worst, metric, difference_ci(worst.per_seed(metric), best.per_seed(metric)))
    return None


def finding(groups: Sequence[Group], metric: str | None, contrast: str | None = None) -> str:
    """The experiment's one computed sentence."""
    if metric is None:
        return "No run of this experiment finished with a metric; see the failed and missing runs."
    comparison = compare(groups, metric, contrast)
    if comparison is not None:
        return comparison.sentence()
    measured = [g for g in groups if g.estimate(metric).n]
    if not measured:
        return f"No finished run reports {metric}; see the failed and missing runs."
    only = measured[0]
    where = setting_label(only.settings)
    return (
        f"Only {only.norm}{' at ' + where if where else ''} has results, nothing to compare: {metric} = "
        f"{fmt_estimate(only.estimate(metric))} over {only.estimate(metric).n} seeds ({'/'.join(only.models)})."
    )
