"""``python -m normbench.report.scorecard DIR [DIR ...]``: the trained scorecard, every norm against layer norm in
every catalogue entry, in one table.

The probe scorecard (``python -m normbench.instruments.scorecard``) says in seconds where a norm can break; this
table says where it did once trained. For each entry and each norm: the entry's headline metric minus layer norm's,
paired 95% CI over seeds (each norm at its best grid value where the entry tunes one, as in the entry's report), at
the setting of the entry's sweep where the norm is furthest behind layer norm by the mean, the rule by which each
entry's own sentence picks its setting. A CI clear of 0 is *worse* or *better*; one that includes 0 is a *null*,
with the effect its seeds could have detected (MDE at 80% power).

The DIRs are sweep dirs (Hydra job dirs anywhere below, every entry's runs together) or report folders
(``results.csv`` beside ``finding.json``, as in docs/findings/<entry>/), whose runs are read back and chosen and
compared by the same code as the report's. Writes ``scorecard.csv`` and ``scorecard.md`` into ``--out`` (default:
the first DIR) and, with ``--readme``, the table into that README between ``<!-- scorecard:begin -->`` and
``<!-- scorecard:end -->``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import OverrideParseException

from normbench.errors import NormbenchError
from normbench.norm_kinds import BATCH, NONE, TOKEN, norm_order
from normbench.report.confidence import difference_ci
from normbench.report.index import write_readme_section
from normbench.report.pipeline import FINDINGS_FILE, KEY_FIELDS, ExperimentReport, analyse, write_csv
from normbench.report.runs import ReportError, Run, find_job_dirs, load_runs, parse_overrides
from normbench.report.summary import Comparison, fmt_difference, fmt_size, score, setting_label

#: the norm every other one is set against
REFERENCE = "layer"
BEGIN, END = "<!-- scorecard:begin -->", "<!-- scorecard:end -->"
RESULTS_CSV, SELECTION_CSV = "results.csv", "selection.csv"
#: results.csv columns that hold a run's numbers without a ``/`` in their name (the other plain names are overrides)
PLAIN_NUMBERS = ("wall_time_s", "train_step_s", "global_step", "num_params")
#: results.csv columns that are neither an override nor a number
RECORD_COLUMNS = ("job_dir", *KEY_FIELDS, "norm_kind", "status", "error", "git_commit")
SELECTION_MEAN = " (selection mean)"
KIND_WORDS = {BATCH: "batch statistics", TOKEN: "per-token", NONE: "no norm"}  # else: not recorded
VERDICT_WORDS = {"clear": "worse", "against": "better", "no CI": "one seed, no CI"}


@dataclass(frozen=True)
class Effect:
    """One norm's headline effect relative to layer norm in one entry (``comparison.worst`` is the norm,
    ``comparison.best`` layer norm), or the reason there is none."""

    experiment: str
    norm: str
    kind: str
    metric: str | None
    comparison: Comparison | None
    #: the settings where both norms have the metric; the comparison is at the one where the norm trails most
    settings: int = 0
    reason: str = ""

    @property
    def verdict(self) -> str:
        """``worse``, ``better`` or ``null (MDE ...)``: the difference's CI clear of 0 or not."""
        if self.comparison is None:
            return self.reason
        verdict = self.comparison.verdict
        if verdict == "null":
            return f"null (MDE {fmt_size(self.comparison.metric, self.comparison.mde)})"
        return VERDICT_WORDS.get(verdict, verdict)

    def cell(self) -> str:
        """``worse: -11.9 +/- 6.9 points (model lstm, batch size 4; 6 seeds)``."""
        c = self.comparison
        if c is None:
            return self.reason
        d = c.difference
        seeds = f"{d.n} seed{'s' if d.n != 1 else ''}" + ("" if d.method == "paired" else " each, Welch")
        where = setting_label(c.worst.settings, skip=())
        where = f" ({where + '; ' if where else ''}{seeds})"
        if d.no_spread and d.mean == 0:
            return f"same: 0 in every seed{where}"
        size = fmt_difference(c.metric, d.mean, d.ci) if d.has_ci else fmt_size(c.metric, d.mean)
        return f"{self.verdict}: {'+' if d.mean > 0 else ''}{size}{where}"

    def row(self) -> dict[str, Any]:
        """The CSV row: the numbers behind the cell, unrounded."""
        row: dict[str, Any] = {"experiment": self.experiment, "norm": self.norm, "kind": self.kind}
        row["metric"] = self.metric
        c = self.comparison
        if c is None:
            return {**row, "verdict": self.reason}
        d = c.difference
        return {
            **row,
            "setting": setting_label(c.worst.settings, skip=()),
            "chosen": " ".join(f"{k}={v}" for k, v in c.worst.chosen),
            "reference chosen": " ".join(f"{k}={v}" for k, v in c.best.chosen),
            "mean": c.worst.estimate(c.metric).mean,
            "reference mean": c.best.estimate(c.metric).mean,
            "difference": d.mean,
            "ci95": d.ci if d.has_ci else None,
            "seeds": d.n,
            "method": d.method,
            "mde80": c.mde,
            "verdict": c.verdict,
            "settings compared": self.settings,
        }


def effects(rep: ExperimentReport, reference: str = REFERENCE) -> list[Effect]:
    """Each norm of one entry but the reference against the reference, at the setting where it trails most."""
    metric = rep.metric
    kinds: dict[str, str] = {}
    measured: dict[tuple, dict[str, Any]] = defaultdict(dict)
    for group in rep.groups:
        kinds.setdefault(group.norm, group.kind)
        if metric and group.estimate(metric).n:
            measured[group.settings][group.norm] = group
    out = []
    for norm in sorted(kinds.keys() - {reference}, key=norm_order):
        pairs = [(cell[reference], cell[norm]) for cell in measured.values() if reference in cell and norm in cell]
        if not pairs:
            if reference not in kinds:
                reason = f"no {reference} norm run"
            else:
                reason = f"no setting where both report {metric}" if metric else "no finished run"
            out.append(Effect(rep.name, norm, kinds[norm], metric, None, reason=reason))
            continue
        assert metric is not None  # pairs are measured on it
        ref, own = max(pairs, key=lambda pair: score(pair[0], metric) - score(pair[1], metric))
        comparison = Comparison(ref, own, metric, difference_ci(own.per_seed(metric), ref.per_seed(metric)))
        out.append(Effect(rep.name, norm, kinds[norm], metric, comparison, len(pairs)))
    return out


def _cell_value(text: str) -> Any:
    """A results.csv cell as the value the report had: Hydra's parser reads it as the override it came from
    (``0.003``, ``True``, ``[1, 100, 10000]`` as that JSON text); an empty cell is None."""
    if text == "":
        return None
    try:
        value = parse_overrides([f"cell={text}"])["cell"]
    except OverrideParseException:
        return text
    return value if value is None or isinstance(value, str | int | float | bool) else text


def _recorded_choices(folder: Path) -> dict[str, dict[str, str]]:
    """Per experiment, what its report chose with: the headline metric and the selection key (finding.json) and
    the selection's metric (selection.csv's ``<metric> (selection mean)`` column), as config keys."""
    config: dict[str, dict[str, str]] = defaultdict(dict)
    findings = folder / FINDINGS_FILE
    for record in json.loads(findings.read_text()) if findings.is_file() else []:
        keys = {"report.metric": record.get("metric"), "report.select": record.get("selected")}
        config[record["experiment"]].update({k: v for k, v in keys.items() if v})
    if (folder / SELECTION_CSV).is_file():
        with (folder / SELECTION_CSV).open(newline="") as handle:
            for row in csv.DictReader(handle):
                on = [k.removesuffix(SELECTION_MEAN) for k, v in row.items() if k.endswith(SELECTION_MEAN) and v]
                if on:
                    config[row["experiment"]]["report.select_on"] = on[0]
    return config


def runs_from_report(folder: Path) -> list[Run]:
    """The runs of a report folder, rebuilt from its results.csv (status, key values, overrides, numbers), each
    with its experiment's recorded choices as config, so that `analyse` selects and compares them as the report did."""
    chosen = _recorded_choices(folder)
    with (folder / RESULTS_CSV).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    runs = []
    for row in rows:
        record: dict[str, Any] = {k: _cell_value(row.get(k) or "") for k in KEY_FIELDS}
        record["status"] = row.get("status") or "missing"
        record.update({k: row[k] for k in ("error", "norm_kind") if row.get(k)})
        overrides = {k: record[k] for k in ("model", "data")}  # swept as config groups, kept as key fields
        metrics: dict[str, float] = {}
        for key, text in row.items():
            if key in RECORD_COLUMNS:
                continue
            if "/" in key or key in PLAIN_NUMBERS:
                if text:
                    (record if key in PLAIN_NUMBERS else metrics)[key] = float(text)
            else:
                overrides[key] = _cell_value(text)
        record["metrics"] = metrics
        config = {**overrides, "experiment_name": record["experiment"], **chosen.get(str(record["experiment"]), {})}
        runs.append(Run(Path(row["job_dir"]), record, overrides, config, choices={}))
    return runs


def load(dirs: Sequence[str]) -> list[Run]:
    """The runs of sweep dirs (job dirs below them) and of report folders (a results.csv in the dir or in its
    subfolders, docs/findings/<entry>/); a dir with job dirs is read as a sweep, its report folders left out."""
    sweeps, runs = [], []
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise ReportError(f"{root} is not a directory; accepted: sweep dirs (multirun/...) or report folders")
        if find_job_dirs(root):
            sweeps.append(root)
            continue
        folders = [p.parent for p in [root / RESULTS_CSV, *sorted(root.glob(f"*/{RESULTS_CSV}"))] if p.is_file()]
        if not folders:
            raise ReportError(
                f"{root} holds neither a Hydra job dir of train.py nor a report's {RESULTS_CSV}; accepted: sweep "
                "dirs (multirun/...) or report folders (python -m normbench.report's output, docs/findings/<entry>)"
            )
        for folder in folders:
            runs += runs_from_report(folder)
    return (load_runs(sweeps) if sweeps else []) + runs


def scorecard(reports: Sequence[ExperimentReport], reference: str = REFERENCE) -> list[Effect]:
    """Every entry's effects, or a ReportError when there is no reference run or nothing to set against it."""
    norms = {g.norm for rep in reports for g in rep.groups}
    if reference not in norms:
        raise ReportError(
            f"no {reference} norm run among the runs given (norms: {', '.join(sorted(norms)) or 'none'}); the "
            f"scorecard is relative to {reference} norm: add norm={reference} to the sweeps (all.sh adds it)"
        )
    if norms == {reference}:
        raise ReportError(f"only {reference} norm ran: nothing to set against it; accepted: runs of more norms")
    return [effect for rep in reports for effect in effects(rep, reference)]


def _header(norm: str, kind: str) -> str:
    return f"{norm} ({KIND_WORDS.get(kind, 'kind not recorded')})"


def table(reports: Sequence[ExperimentReport], found: Sequence[Effect]) -> str:
    """Markdown: a row per entry (its headline metric), a column per norm, each cell the norm's `Effect`."""
    kinds = {e.norm: e.kind for e in found}
    norms = sorted(kinds, key=norm_order)
    cells = {(e.experiment, e.norm): e.cell() for e in found}
    lines = [
        "| entry | headline metric | " + " | ".join(_header(n, kinds[n]) for n in norms) + " |",
        "|---|---|" + "---|" * len(norms),
    ]
    for rep in reports:
        row = [rep.name, rep.metric or "-", *(cells.get((rep.name, n), "not run") for n in norms)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def section(reports: Sequence[ExperimentReport], found: Sequence[Effect], reference: str = REFERENCE) -> str:
    """The table and what it rests on: runs, and the entries without the reference norm."""
    runs = sum(len(rep.runs) for rep in reports)
    ok = sum(len(rep.runs) - len(rep.not_ok) for rep in reports)
    entries = f"{len(reports)} entr{'ies' if len(reports) != 1 else 'y'}"
    text = table(reports, found) + f"\n\nFrom {runs} runs ({ok} finished) of {entries}."
    without = [rep.name for rep in reports if reference not in {g.norm for g in rep.groups}]
    if without:
        text += f" Without a {reference} norm run, so without a comparison: {', '.join(without)}."
    return text + "\n"


def _explained() -> str:
    """The module docstring's second paragraph: what a cell is."""
    return " ".join(__doc__.split("\n\n")[1].split())


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m normbench.report.scorecard", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="sweep dirs (multirun/...) or report folders (docs/findings)")
    parser.add_argument("--out", help="where scorecard.csv and scorecard.md go (default: the first dir)")
    parser.add_argument("--readme", help="also write the table between the scorecard markers of this README")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.dirs[0])
    try:
        reports = analyse(load(args.dirs))
        found = scorecard(reports)
    except NormbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    text = section(reports, found)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "scorecard.csv", [e.row() for e in found])
    (out / "scorecard.md").write_text(f"# The trained scorecard\n\n{_explained()}\n\n{text}")
    if args.readme:
        write_readme_section(Path(args.readme), text, BEGIN, END, "the trained scorecard")
    print(text, end="")
    print(out.resolve())
    return out


if __name__ == "__main__":
    main()
