"""Each norm at its own best value of a swept hyperparameter (the learning rate), chosen on validation.

A comparison of norms at one shared learning rate measures which norm suits that rate. The protocol of the
papers the catalogue cites compares each at its own best value of a small grid: for each cell (the other
swept settings and the norm) the grid value with the best mean *validation* metric, over the seeds that ran
at every grid value of the cell (a two-stage design runs one seed per grid value, then the other seeds at
the chosen value only; those later seeds cannot choose). Test numbers are never used to choose.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from normbench.report.runs import Run, configured, hashable
from normbench.report.summary import Group, higher_is_better, norm_order, reported_metrics, sortable


@dataclass(frozen=True)
class Choice:
    """The chosen grid value of one cell, with every candidate's validation score and the seeds it used."""

    cell: tuple[tuple[str, Any], ...]
    norm: str
    key: str
    value: Any
    metric: str
    scores: tuple[tuple[Any, float], ...]
    seeds: tuple[Any, ...]
    #: the grid values where runs failed, with those runs' seeds: not chosen while a value without failures exists
    failed: tuple[tuple[Any, tuple[Any, ...]], ...] = ()
    #: the chosen value's mean wall time over its runs (seconds): the second stage starts the longest cells first
    wall_time_s: float = math.nan
    #: the cell's keys its runs were given on the command line (None: all of them); a key another arm of the sweep
    #: set (the LM's data.eval_tokens beside an MR arm) is only the config's value here, and may not exist in it
    given: frozenset[str] | None = None

    @property
    def at_edge(self) -> bool:
        """Chosen at the smallest or largest grid value: the grid may not bracket the best value."""
        values = [v for v, _ in self.scores]
        return len(values) > 2 and self.value in (values[0], values[-1])

    def overrides(self) -> list[str]:
        """The command-line overrides that rerun this cell at its chosen value (the second stage)."""
        cell = [(k, v) for k, v in self.cell if self.given is None or k in self.given]
        return [override(k, v) for k, v in cell] + [f"norm={self.norm}", override(self.key, self.value)]

    def rows(self) -> list[dict[str, Any]]:
        failed = dict(self.failed)
        return [
            {
                **dict(self.cell),
                "norm": self.norm,
                self.key: value,
                f"{self.metric} (selection mean)": score,
                "selection seeds": " ".join(str(s) for s in self.seeds),
                "chosen": value == self.value,
                "at grid edge": self.at_edge,
                "failed seeds": " ".join(str(seed) for seed in failed.get(value, ())),
            }
            for value, score in self.scores
        ]


def selection_metric(runs: Sequence[Run], headline: str | None, requested: str | None = None) -> str | None:
    """``--select-on``, else the config's ``report.select_on``, else the headline's validation twin
    (``test/acc`` -> ``val/acc``), else the headline itself."""
    present = reported_metrics(runs)
    twin = "val/" + headline.removeprefix("test/") if headline and headline.startswith("test/") else None
    for candidate in [requested, configured(runs, "report.select_on"), twin, headline]:
        if candidate and candidate in present:
            return candidate
    return None


def test_twin(runs: Sequence[Run], metric: str) -> str | None:
    """The test metric of a validation one (``val/acc`` -> ``test/acc``), where the runs report it: the headline of
    an entry that chooses on ``metric``, so that no number is both the choice's criterion and its result."""
    twin = "test/" + metric.removeprefix("val/")
    return twin if metric.startswith("val/") and twin in reported_metrics(runs) else None


def select(groups: Sequence[Group], key: str, metric: str) -> tuple[list[Group], list[Choice]]:
    """The chosen group of every cell (its settings without ``key``, ``chosen`` naming the value) and the
    choices. A grid value with no finished run of the selection metric cannot be chosen, nor one where a seed's
    run failed (diverged, a non-finite loss) while another value has no failed run: its mean over the seeds
    that survived would reward the instability (on the GPU, 3e-3 diverged in two of three seeds and was the best
    value of the one seed left)."""
    cells: dict[tuple, list[Group]] = defaultdict(list)
    for group in groups:
        cell = tuple(kv for kv in group.settings if kv[0] != key)
        cells[(cell, group.norm)].append(group)
    sign = 1.0 if higher_is_better(metric) else -1.0
    chosen_groups, choices = [], []
    for (cell, norm), members in cells.items():
        measured = [g for g in members if g.per_seed(metric)]
        if not measured:
            continue
        failed = {id(g): tuple(sorted((r.seed for r in g.runs if r.status == "failed"), key=str)) for g in measured}
        eligible = [g for g in measured if not failed[id(g)]] or measured
        common = set.intersection(*(set(g.per_seed(metric)) for g in eligible))
        scores = []
        for group in sorted(measured, key=lambda g: sortable([dict(g.settings)[key]])):
            values = group.per_seed(metric)
            used = [values[s] for s in common if s in values] or list(values.values())
            scores.append((dict(group.settings)[key], sum(used) / len(used), group))
        eligible_ids = {id(g) for g in eligible}
        candidates = [s for s in scores if id(s[2]) in eligible_ids]
        value, _, best = max(candidates, key=lambda s: sign * s[1] if math.isfinite(s[1]) else -math.inf)
        for run in best.runs:
            run.settings = {k: v for k, v in run.settings.items() if k != key}
        chosen_groups.append(Group(cell, norm, best.runs, chosen=((key, value),)))
        choices.append(
            Choice(
                cell,
                norm,
                key,
                value,
                metric,
                tuple((v, s) for v, s, _ in scores),
                tuple(sorted(common, key=str)),
                tuple((v, failed[id(g)]) for v, _, g in scores if failed[id(g)]),
                _mean_wall_time(best.runs),
                frozenset(k for run in best.runs for k in run.overrides),
            )
        )
    chosen_groups.sort(key=lambda g: (sortable(v for _, v in g.settings), norm_order(g.norm)))
    return chosen_groups, choices


def _mean_wall_time(runs: Sequence[Run]) -> float:
    times = [float(run.record["wall_time_s"]) for run in runs if isinstance(run.record.get("wall_time_s"), int | float)]
    return sum(times) / len(times) if times else math.nan


def override(key: str, value: Any) -> str:
    """``key=value`` as Hydra reads it back: a list (stored as a tuple, ``hashable``) written ``[a,b]``."""
    shown = "[" + ",".join(map(str, value)) + "]" if isinstance(value, tuple | list) else value
    return f"{key}={shown}"


def shared_overrides(runs: Sequence[Run]) -> list[str]:
    """The overrides every first-stage run had alike (a sweep of one value, data.batch_size=4): a second-stage
    run is a single run, which the sweep's values do not reach, so its cell carries them (seed aside)."""
    common = [dict(run.overrides) for run in runs]
    keys = set(common[0]).intersection(*common[1:]) if common else set()
    keep = sorted(k for k in keys if k not in ("seed", "experiment") and len({hashable(c[k]) for c in common}) == 1)
    return [override(k, common[0][k]) for k in keep]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m normbench.report.selection DIR --select optim.lr``: the chosen value of each cell of a first-stage
    sweep, one line of overrides per cell, for a second stage that runs the other seeds at it only; the cells whose
    chosen runs took longest come first, so a launcher that hands out jobs in order ends its workers together."""
    import argparse
    import sys

    from normbench.errors import NormbenchError
    from normbench.report.pipeline import analyse
    from normbench.report.runs import load_runs

    parser = argparse.ArgumentParser(
        prog="python -m normbench.report.selection", description=main.__doc__.splitlines()[0]
    )
    parser.add_argument("dirs", nargs="+", help="the first stage's sweep dirs")
    parser.add_argument("--select", help="the swept key to choose (default: the config's report.select)")
    parser.add_argument("--select-on", help="the metric to choose on (default: the headline's val/ twin)")
    args = parser.parse_args(argv)
    try:
        for rep in analyse(load_runs(args.dirs), select_key=args.select, select_on=args.select_on):
            key = args.select or configured(rep.runs, "report.select")
            if key is None or key not in rep.swept:
                swept = ", ".join(rep.swept) or "nothing"
                raise NormbenchError(f"{rep.name}: the selection key {key} is not swept; swept: {swept}")
            if not rep.choices:
                raise NormbenchError(f"{rep.name}: no finished run reports a metric to choose on")
            shared = shared_overrides(rep.runs)
            longest_first = sorted(rep.choices, key=lambda c: -c.wall_time_s if math.isfinite(c.wall_time_s) else 0.0)
            for choice in longest_first:
                own = choice.overrides()
                keys = {o.split("=", 1)[0] for o in own}
                print(" ".join([*(o for o in shared if o.split("=", 1)[0] not in keys), *own]))
    except NormbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
