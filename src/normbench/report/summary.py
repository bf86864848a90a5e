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

from normbench.instruments.metrics import HEADLINE
from normbench.norm_kinds import norm_kind, norm_order
from normbench.report.confidence import POWER, Estimate, difference_ci, mean_ci, minimum_detectable_effect
from normbench.report.runs import Run, configured

#: the headline metric of an experiment when neither --metric nor the config's `report.metric` names one
PRIMARY_METRICS = ("val/acc", "test/acc", "val/ppl", "test/ppl", "val/loss", "test/loss")


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
    """Accuracies and differences of accuracies (the train/eval gap) are stated in percentage points."""
    leaf = metric_leaf(metric)
    return leaf.startswith("acc") or leaf == "train_eval_gap"


#: the unit a sentence names after a difference of a metric that is not a share (keyed by the metric's leaf)
UNITS = {
    "bpc": "bits per character",
    "bpc_train_eval_gap": "bits per character",
    "bpt": "bits per token",
    "bpt_train_eval_gap": "bits per token",
    "loss": "nats",
    "ppl": "perplexity",
    "causal_leak": "(RMS feature change)",
    "partner_dependence": "(logit std across batch mates)",
    "var_dist": "(RMS distance of the variances)",
    "mean_dist": "(RMS distance of the means)",
    "scale_shift": "(log of the output's scale factor)",
    "mean_shift": "(output shift, running standard deviations)",
    "steps_to_target": "steps",
}


def fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def decimals_of(ci: float) -> int:
    """Decimals that show two significant digits of a CI half-width (0.007057 -> 4, 8.53 -> 1, 12 -> 0)."""
    return max(0, 1 - math.floor(math.log10(abs(ci))))


def fmt_with_ci(mean: float, ci: float, scale: float = 1.0) -> tuple[str, str]:
    """``mean`` and ``ci`` (times ``scale``) rounded to the CI's precision: two significant digits of the CI,
    the mean to the same decimals. Without a usable CI, four significant digits and ``n/a``."""
    mean, ci = mean * scale, ci * scale
    if not math.isfinite(ci):
        return fmt(mean), "n/a"
    if ci <= 1e-9 * max(1.0, abs(mean)):  # no spread: every seed agreed
        return fmt(round(mean, 9)), "0"
    digits = decimals_of(ci)
    return f"{mean:.{digits}f}", f"{ci:.{digits}f}"


def fmt_difference(metric: str, value: float, ci: float) -> str:
    """``2.7 +/- 0.71 points`` for shares, ``0.24 +/- 0.073 (RMS feature change)`` otherwise."""
    points = is_proportion(metric)
    mean, half = fmt_with_ci(value, ci, 100.0 if points else 1.0)
    unit = "points" if points else UNITS.get(metric_leaf(metric), "")
    return f"{mean} +/- {half} {unit}".rstrip()


def fmt_size(metric: str, value: float) -> str:
    """A single size (an MDE, a spread) in the metric's unit, two significant digits."""
    if not math.isfinite(value):
        return "n/a"
    if is_proportion(metric):
        return f"{value * 100:.2g} points"
    return f"{value:.2g} {UNITS.get(metric_leaf(metric), '')}".rstrip()


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
    #: the values a selection chose for this norm here (``(("optim.lr", 0.003),)``; normbench.report.selection)
    chosen: tuple[tuple[str, Any], ...] = ()

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def kind(self) -> str:
        """``batch``, ``token``, ``none`` or ``other`` (normbench.norm_kinds), as the runs recorded it."""
        return norm_kind(self.norm, next((r.record for r in self.runs if r.record.get("norm_kind")), None))

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
    """Runs (with `settings` filled by `normbench.report.runs.sweep_settings`) by setting and norm, sorted."""
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
            instruments.update(k for k in HEADLINE if k in (run.record.get("instruments") or {}))
    rank = {m: i for i, m in enumerate(PRIMARY_METRICS)}
    ordered = sorted(metrics, key=lambda m: (rank.get(m.split("@")[0], len(rank)), _at_order(m)))
    timing = ["wall_time_s", *(["train_step_s"] if step_timed(runs) else [])]
    return list(dict.fromkeys([*ordered, *(k for k in HEADLINE if k in instruments), *timing]))


def _at_order(metric: str) -> tuple:
    """Sort ``name@len=64`` before ``name@len=128``."""
    name, _, at = metric.partition("@")
    value = at.partition("=")[2]
    try:
        return (name, 0, float(value), "")
    except ValueError:
        return (name, 1, 0.0, value)


def reported_metrics(runs: Sequence[Run]) -> set[str]:
    """Every metric some finished run reports."""
    return {k for run in runs if run.ok for k in run.values()}


def primary_metric(runs: Sequence[Run], requested: str | None = None) -> str | None:
    """``--metric``, else the experiment config's ``report.metric``, else the first of `PRIMARY_METRICS` present."""
    present = reported_metrics(runs)
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
        row.update({f"{k} (chosen)": v for k, v in group.chosen})
        row["n_seeds"] = len(group.ok_runs)
        row["not_ok"] = len(group.runs) - len(group.ok_runs)
        for metric in metrics:
            est = group.estimate(metric)
            row[f"{metric}:mean"] = est.mean if est.n else None
            row[f"{metric}:ci95"] = est.ci if est.has_ci else None
        rows.append(row)
    return rows


def markdown_table(groups: Sequence[Group], swept: Sequence[str], metrics: Sequence[str]) -> str:
    chosen = list(dict.fromkeys(k for g in groups for k, _ in g.chosen))
    header = [*swept, "norm", *(f"{k} (chosen)" for k in chosen), "seeds", *(f"{m} (mean ± 95% CI)" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        not_ok = len(group.runs) - len(group.ok_runs)
        seeds = f"{len(group.ok_runs)}" + (f" ({not_ok} not ok)" if not_ok else "")
        cells = [str(v) for _, v in group.settings] + [group.norm]
        cells += [str(dict(group.chosen).get(k, "")) for k in chosen] + [seeds]
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

    @property
    def mde(self) -> float:
        """The minimum detectable effect of this difference at `POWER` (NaN without a CI)."""
        return minimum_detectable_effect(self.difference)

    @property
    def verdict(self) -> str:
        """``clear`` (CI clear of zero, batch statistics worse, as the literature says), ``against`` (clear of
        zero the other way), or ``null`` (the CI includes zero; the MDE says how small the effect must be)."""
        d = self.difference
        if not d.has_ci:
            return "no CI"
        if not d.excludes_zero:
            return "null"
        return "clear" if self.worse_is_worst else "against"

    @property
    def worse_is_worst(self) -> bool:
        """Whether ``worst`` really did worse than ``best`` (the sign of the difference)."""
        mean = self.difference.mean
        if best_at_zero(self.metric):
            return abs(self.worst.estimate(self.metric).mean) >= abs(self.best.estimate(self.metric).mean)
        return mean < 0 if higher_is_better(self.metric) else mean > 0

    def sentence(self) -> str:
        d, metric = self.difference, self.metric
        # a key one arm of an entry never sets (None in both, or in one) says nothing about either group
        shared = tuple(kv for kv in self.best.settings if kv in self.worst.settings and kv[1] is not None)
        direction = (
            ("below" if d.mean < 0 else "above")
            if is_proportion(metric)
            else ("lower than" if d.mean < 0 else "higher than")
        )
        size = f"{fmt_difference(metric, abs(d.mean), d.ci)} {direction}"
        means = f"{fmt(self.worst.estimate(metric).mean)} vs {fmt(self.best.estimate(metric).mean)}"
        how = f"paired over {d.n} seeds" if d.method == "paired" else f"Welch, {d.n}+ seeds each"
        models = "/".join(sorted(set(self.best.models) | set(self.worst.models)))
        worst, best = self._name(self.worst, shared), self._name(self.best, shared)
        chosen = ""
        if self.worst.chosen or self.best.chosen:
            keys = ", ".join(f"{k} {dict(self.worst.chosen).get(k)} vs {v}" for k, v in self.best.chosen)
            chosen = f"; each at its best {keys}"
        where = setting_label(shared)
        details = f"{metric} {means}; {how}{chosen}"
        head = f"At {where}, {worst} is {size} {best}" if where else f"For {models}, {worst} is {size} {best}"
        head += f" ({models}, {details})" if where else f" ({details})"
        if d.has_ci and not d.excludes_zero:
            head += (
                f": a null, the CI includes 0; these {d.n} seeds detect {fmt_size(metric, self.mde)} "
                f"with {POWER:.0%} power"
            )
        return head + "."

    @staticmethod
    def _name(group: Group, shared: tuple) -> str:
        own = setting_label((kv for kv in group.settings if kv not in shared and kv[1] is not None), skip=())
        return f"{group.norm} ({own})" if own else group.norm


def contrast_key(runs: Sequence[Run]) -> str | None:
    """The experiment config's ``report.contrast``: a swept key whose values the sentence sets against each
    other within one norm (ddp: ``norm.sync``), where norm against norm is not the question."""
    return configured(runs, "report.contrast")


def compare(groups: Sequence[Group], metric: str, contrast: str | None = None) -> Comparison | None:
    """With a ``contrast`` key, the norm and setting where its values differ most; else the setting where
    the best per-token norm leads the worst batch-statistic norm most; without both kinds at one setting,
    where the best norm leads the worst most; with one norm per setting, the best group against the worst
    over all settings. None with fewer than two groups measured."""
    measured = [g for g in groups if g.estimate(metric).n]
    by_contrast: dict[tuple, list[Group]] = defaultdict(list)
    for group in measured:
        if contrast in dict(group.settings):
            # a contrast of config groups (model) leaves out their own options too (model.causal: set for one)
            rest = tuple(kv for kv in group.settings if kv[0] != contrast and not kv[0].startswith(f"{contrast}."))
            by_contrast[(group.norm, rest)].append(group)
    by_setting: dict[tuple, list[Group]] = defaultdict(list)
    for group in measured:
        by_setting[group.settings].append(group)

    def ranked(group: Group) -> float:
        return score(group, metric)

    passes = [
        [(gs, gs) for gs in by_contrast.values()],
        [([g for g in gs if g.kind == "token"], [g for g in gs if g.kind == "batch"]) for gs in by_setting.values()],
        [(gs, gs) for gs in by_setting.values()],
        [(measured, measured)],
    ]
    for pairs in passes:
        candidates = []
        for tops, bottoms in pairs:
            best = max(tops, key=ranked, default=None)
            worst = min((g for g in bottoms if g is not best), key=ranked, default=None)
            if best is not None and worst is not None:
                candidates.append((best, worst))
        if candidates:
            best, worst = max(candidates, key=lambda c: ranked(c[0]) - ranked(c[1]))
            return Comparison(best, worst, metric, difference_ci(worst.per_seed(metric), best.per_seed(metric)))
    return None


def all_comparisons(groups: Sequence[Group], metric: str) -> list[Comparison]:
    """At every setting that has both kinds, each batch-statistic norm against the best per-token norm there."""
    by_setting: dict[tuple, list[Group]] = defaultdict(list)
    for group in groups:
        if group.estimate(metric).n:
            by_setting[group.settings].append(group)
    out = []
    for members in by_setting.values():
        controls = [g for g in members if g.kind == "token"]
        if not controls:
            continue
        best = max(controls, key=lambda g: score(g, metric))
        for group in members:
            if group.kind == "batch":
                out.append(
                    Comparison(best, group, metric, difference_ci(group.per_seed(metric), best.per_seed(metric)))
                )
    return out


def comparison_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    return [
        {
            **dict(c.worst.settings),
            "norm": c.worst.norm,
            "control": c.best.norm,
            "metric": c.metric,
            "difference": c.difference.mean,
            "ci95": c.difference.ci if c.difference.has_ci else None,
            "seeds": c.difference.n,
            "method": c.difference.method,
            "mde80": c.mde,
            "verdict": c.verdict,
        }
        for c in comparisons
    ]


@dataclass(frozen=True)
class Flatness:
    """How much a per-token (control) norm's metric moves across the values of ``key``: its highest minus
    its lowest mean there, with the CI of that difference. Flat when the spread is within its 95% CI."""

    norm: str
    where: tuple[tuple[str, Any], ...]
    key: str
    low: Group
    high: Group
    metric: str
    difference: Estimate

    @property
    def flat(self) -> bool:
        return not self.difference.excludes_zero

    def phrase(self) -> str:
        who = f"{self.norm} ({setting_label(self.where, skip=())})" if self.where else self.norm
        spread = fmt_difference(self.metric, self.difference.mean, self.difference.ci)
        name = self.key.rsplit(".", 1)[-1].replace("_", " ")
        high, low = dict(self.high.settings)[self.key], dict(self.low.settings)[self.key]
        return f"{who} {spread} between {name} {high} and {low}"


def flat_key(runs: Sequence[Run]) -> str | None:
    """The experiment config's ``report.flat_over``: the swept key across which its hypothesis says the
    per-token norms stay flat (small_batch: ``data.batch_size``)."""
    return configured(runs, "report.flat_over")


def flatness(groups: Sequence[Group], key: str | None, metric: str | None) -> list[Flatness]:
    """For each per-token norm at each setting of the other keys: its spread across the values of ``key``."""
    if key is None or metric is None:
        return []
    cells: dict[tuple, list[Group]] = defaultdict(list)
    for group in groups:
        settings = dict(group.settings)
        if key in settings and group.kind == "token" and group.estimate(metric).n:
            cells[(group.norm, tuple(kv for kv in group.settings if kv[0] != key))].append(group)
    out = []
    for (norm, where), members in cells.items():
        if len(members) < 2:
            continue
        low = min(members, key=lambda g: g.estimate(metric).mean)
        high = max(members, key=lambda g: g.estimate(metric).mean)
        out.append(
            Flatness(norm, where, key, low, high, metric, difference_ci(high.per_seed(metric), low.per_seed(metric)))
        )
    return out


def flatness_sentence(checks: Sequence[Flatness]) -> str:
    """Says whether the controls were flat, and when they were not that the comparison is confounded."""
    if not checks:
        return ""
    bent = [c for c in checks if not c.flat]
    key = checks[0].key.rsplit(".", 1)[-1].replace("_", " ")
    if not bent:
        return (
            f" The controls are flat across {key} (spread within its 95% CI): "
            + "; ".join(c.phrase() for c in checks)
            + "."
        )
    return (
        f" NOT flat across {key}, so the comparison is confounded by training budget, not only the norm: "
        + "; ".join(c.phrase() for c in bent)
        + "."
    )


def score(group: Group, metric: str) -> float:
    """How good ``group`` is on ``metric``, higher better whatever the metric's direction (a gap: nearer 0)."""
    mean = group.estimate(metric).mean
    return -abs(mean) if best_at_zero(metric) else (1.0 if higher_is_better(metric) else -1.0) * mean


def finding(
    groups: Sequence[Group], metric: str | None, comparison: Comparison | None, checks: Sequence[Flatness] = ()
) -> str:
    """The experiment's one computed sentence from its headline ``comparison`` (and whether its controls were
    flat)."""
    if metric is None:
        return "No run of this experiment finished with a metric; see the failed and missing runs."
    if comparison is not None:
        return comparison.sentence() + flatness_sentence(checks)
    measured = [g for g in groups if g.estimate(metric).n]
    if not measured:
        return f"No finished run reports {metric}; see the failed and missing runs."
    only = measured[0]
    where = setting_label(only.settings)
    return (
        f"Only {only.norm}{' at ' + where if where else ''} has results, nothing to compare: {metric} = "
        f"{fmt_estimate(only.estimate(metric))} over {only.estimate(metric).n} seeds ({'/'.join(only.models)})."
    )
