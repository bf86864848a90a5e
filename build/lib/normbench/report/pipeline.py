"""``python -m normbench.report DIR [DIR ...]``: runs -> results.csv, summary.csv, summary.md and PNG figures.

Reads every Hydra job dir under the given dirs (single runs or multiruns), groups the runs by experiment,
refuses runs that cannot be compared, and writes into one folder (default ``<first dir>/report``), whose
path it prints last. With ``--wandb`` the tables and figures also go to W&B, one ``job_type=report`` run
in each experiment's group (offline unless WANDB_MODE says otherwise).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normbench.errors import NormbenchError
from normbench.report.figures import FigureInput, draw_all
from normbench.report.runs import (
    MISSING,
    ReportError,
    Run,
    by_experiment,
    check_comparable,
    configured,
    load_runs,
    sweep_settings,
)
from normbench.report.selection import Choice, select, selection_metric, test_twin
from normbench.report.summary import (
    Comparison,
    Flatness,
    Group,
    all_comparisons,
    compare,
    comparison_rows,
    contrast_key,
    finding,
    flat_key,
    flatness,
    fmt,
    fmt_size,
    group_runs,
    markdown_table,
    norm_order,
    primary_metric,
    sortable,
    summary_metrics,
    table_rows,
)
from normbench.results import write_json_atomic

#: what each experiment's report found, one record per experiment (read by ``--index``)
FINDINGS_FILE = "finding.json"
#: the key config values every results.csv row starts with
KEY_FIELDS = ("experiment", "model", "norm", "data", "batch_size", "seed")


@dataclass
class ExperimentReport:
    """One experiment's runs and everything computed from them."""

    name: str
    runs: list[Run]
    swept: list[str]
    metric: str | None
    groups: list[Group]
    metrics: list[str]
    sentence: str
    figures: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    #: the swept key each norm was tuned over (its best value chosen on `select_metric`), and the choices
    select_key: str | None = None
    select_metric: str | None = None
    choices: list[Choice] = field(default_factory=list)
    flatness: list[Flatness] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    headline: Comparison | None = None

    @property
    def not_ok(self) -> list[Run]:
        return [r for r in self.runs if not r.ok]

    @property
    def compared_runs(self) -> list[Run]:
        """The runs behind the tables and figures: with a selection, those of the chosen values only."""
        return [r for g in self.groups for r in g.runs] if self.select_key else self.runs

    @property
    def shown_swept(self) -> list[str]:
        return [k for k in self.swept if k != self.select_key]

    @property
    def verdict(self) -> str:
        """``clear``, ``against`` or ``null (MDE ...)`` of the headline comparison; ``-`` without one."""
        if self.headline is None:
            return "-"
        verdict = self.headline.verdict
        if verdict == "null":
            return f"null (MDE {fmt_size(self.headline.metric, self.headline.mde)})"
        return verdict


def analyse(
    runs: Sequence[Run],
    metric: str | None = None,
    select_key: str | None = None,
    select_on: str | None = None,
    flat_over: str | None = None,
    flat_metric: str | None = None,
) -> list[ExperimentReport]:
    """Group by experiment, find the swept keys, refuse incomparable runs, choose each norm's best value of
    the selection key on validation, compute tables, comparisons, the controls' flatness and the sentence."""
    if metric and not any(metric in run.values() for run in runs):
        reported = sorted({k for run in runs for k in (run.record.get("metrics") or {})})
        raise ReportError(f"--metric {metric} is not reported by any run; the runs report {', '.join(reported)}")
    reports = []
    for name, members in by_experiment(runs).items():
        swept = sweep_settings(members)
        check_comparable(name, members, swept)
        members.sort(key=lambda r: (sortable(r.settings.values()), norm_order(r.norm), sortable([r.seed])))
        groups = group_runs(members)
        chosen = primary_metric(members, metric)
        key = select_key or configured(members, "report.select")
        if key is not None and key not in swept:
            if select_key:
                raise ReportError(f"--select {key} is not swept in {name}; swept: {', '.join(swept) or 'nothing'}")
            key = None
        on = selection_metric(members, chosen, select_on) if key else None
        if on is not None and on == chosen and not metric:  # chosen on the headline, it would flatter the choice
            chosen = test_twin(members, on) or chosen
        choices: list[Choice] = []
        if key and on:
            groups, choices = select(groups, key, on)
        # on the headline, or on report.flat_metric where the headline cannot move for a control (a train/eval gap)
        flat_on = flat_metric or configured(members, "report.flat_metric") or chosen
        checks = flatness(groups, flat_over or flat_key(members), flat_on)
        headline = compare(groups, chosen, contrast_key(members)) if chosen else None
        reports.append(
            ExperimentReport(
                name,
                members,
                swept,
                chosen,
                groups,
                summary_metrics(members),
                finding(groups, chosen, headline, checks),
                select_key=key if on else None,
                select_metric=on,
                choices=choices,
                flatness=checks,
                comparisons=all_comparisons(groups, chosen) if chosen else [],
                headline=headline,
            )
        )
    return reports


def results_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per run: job dir, key config values, status, every override, then every number it reported."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"job_dir": str(run.job_dir), "status": run.status, "error": "" if run.ok else run.error}
        row.update({k: run.key(k) for k in KEY_FIELDS})
        row["norm_kind"] = run.record.get("norm_kind", "")  # so a report folder alone still places a user's norm
        row.update({k: v for k, v in run.overrides.items() if k not in KEY_FIELDS})
        row.update(run.values())
        row["git_commit"] = run.record.get("git_commit", "")
        rows.append(row)
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, Any]], first: Sequence[str] = ()) -> None:
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, restval="")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def not_ok_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [
        {
            "experiment": run.experiment,
            "status": run.status,
            "norm": run.norm,
            "seed": run.seed,
            "settings": " ".join(f"{k}={v}" for k, v in run.settings.items()),
            "error": run.error,
            "job_dir": str(run.job_dir),
        }
        for run in runs
        if not run.ok
    ]


def markdown(reports: Sequence[ExperimentReport], dirs: Sequence[str]) -> str:
    runs = [r for rep in reports for r in rep.runs]
    counts = {s: sum(r.status == s for r in runs) for s in ("ok", "failed", MISSING)}
    other = len(runs) - sum(counts.values())
    lines = [
        "# normbench report",
        "",
        f"{len(runs)} runs ({counts['ok']} ok, {counts['failed']} failed, {counts[MISSING]} missing"
        + (f", {other} other" if other else "")
        + ") from "
        + ", ".join(f"`{d}`" for d in dirs)
        + ". Mean ± 95% CI over seeds (Student t; n/a with one seed).",
    ]
    for rep in reports:
        lines += ["", f"## {rep.name}", "", rep.sentence, "", f"Verdict: **{rep.verdict}**.", ""]
        commits = sorted({str(r.record["git_commit"])[:10] for r in rep.runs if r.record.get("git_commit")})
        lines += [
            f"Swept: {', '.join(rep.swept) or 'nothing but norm and seed'}; headline metric: {rep.metric}; "
            f"code: {len(commits)} commit{'s' if len(commits) != 1 else ''} ({', '.join(commits) or 'unknown'}).",
            "",
        ]
        if rep.select_key:
            lines += [
                f"Each norm at its best `{rep.select_key}` of the grid, chosen per setting on the mean "
                f"{rep.select_metric} over the seeds that ran every grid value; the test metrics played no part "
                "(selection.csv has every candidate).",
                "",
            ]
            edge = [c for c in rep.choices if c.at_edge]
            if edge:
                lines += [
                    f"{len(edge)} of {len(rep.choices)} choices are at an edge of the grid, where the best value "
                    "may lie outside it: " + "; ".join(" ".join(c.overrides()) for c in edge) + ".",
                    "",
                ]
        lines += [markdown_table(rep.groups, rep.shown_swept, rep.metrics), ""]
        if rep.comparisons:
            lines += [
                "Every batch-statistic norm against the best per-token norm at each setting "
                f"({rep.metric}; MDE at 80% power for the seeds it had):",
                "",
                _markdown_rows(comparison_rows(rep.comparisons)),
                "",
            ]
        lines += [f"![{f.stem}]({f.name})" for f in rep.figures]
        if rep.skipped:
            lines += ["", "Figures not drawn: " + "; ".join(f"{k} ({v})" for k, v in rep.skipped.items()) + "."]
    failed = not_ok_rows(runs)
    lines += ["", "## Failed and missing runs", ""]
    lines.append(_markdown_rows(failed) if failed else "None: every run finished.")
    return "\n".join(lines) + "\n"


def _markdown_rows(rows: Sequence[dict[str, Any]]) -> str:
    header = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row.get(k)).replace("|", "\\|") for k in header) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value)
    return "" if value is None else str(value)


def sweep_span_s(runs: Sequence[Run]) -> float | None:
    """Wall seconds from the first job's start to the last job's end (results.json written at each job's end,
    its wall time before that), whatever the launcher ran in parallel."""
    spans = []
    for run in runs:
        path = run.job_dir / "results.json"
        if run.record.get("wall_time_s") is not None and path.is_file():
            end = path.stat().st_mtime
            spans.append((end - float(run.record["wall_time_s"]), end))
    return round(max(e for _, e in spans) - min(s for s, _ in spans), 1) if spans else None


def finding_record(rep: ExperimentReport) -> dict[str, Any]:
    figure = next((f.name for f in rep.figures if "-vs-" in f.name), rep.figures[0].name if rep.figures else None)
    return {
        "experiment": rep.name,
        "sentence": rep.sentence,
        "verdict": rep.verdict,
        "metric": rep.metric,
        "selected": rep.select_key,
        "controls_flat": all(c.flat for c in rep.flatness) if rep.flatness else None,
        "runs": len(rep.runs),
        "not_ok": len(rep.not_ok),
        "sweep_span_s": sweep_span_s(rep.runs),
        "job_time_s": round(sum(float(r.record.get("wall_time_s") or 0) for r in rep.runs), 1),
        "figure": figure,
    }


def write_report(reports: Sequence[ExperimentReport], dirs: Sequence[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs = [r for rep in reports for r in rep.runs]
    write_csv(out / "results.csv", results_rows(runs), first=["job_dir", *KEY_FIELDS, "norm_kind", "status", "error"])
    summary = [{"experiment": rep.name, **row} for rep in reports for row in table_rows(rep.groups, rep.metrics)]
    write_csv(out / "summary.csv", summary)
    selection = [{"experiment": rep.name, **row} for rep in reports for c in rep.choices for row in c.rows()]
    if selection:
        write_csv(out / "selection.csv", selection)
    compared = [{"experiment": rep.name, **row} for rep in reports for row in comparison_rows(rep.comparisons)]
    if compared:
        write_csv(out / "comparisons.csv", compared)
    for rep in reports:
        rep.figures, rep.skipped = draw_all(FigureInput(rep.name, rep.compared_runs, rep.shown_swept, rep.metric, out))
    (out / "summary.md").write_text(markdown(reports, dirs))
    write_json_atomic(out / FINDINGS_FILE, [finding_record(rep) for rep in reports])


def log_to_wandb(reports: Sequence[ExperimentReport], dirs: Sequence[str], out: Path) -> list[Path]:
    """One W&B run per experiment (``job_type=report``, the experiment's group): tables, figures, the finding."""
    import wandb

    from normbench.wandb_start import wandb_mode, wandb_start_error, wandb_start_errors

    mode = wandb_mode(offline=True)
    run_dirs = []
    for rep in reports:
        try:
            run = wandb.init(
                project="normbench",
                group=rep.name,
                job_type="report",
                name=f"report-{rep.name}",
                dir=str(out),
                mode=mode,
                config={"experiment": rep.name, "dirs": list(dirs), "swept": rep.swept, "metric": rep.metric},
            )
        except wandb_start_errors() as err:
            raise wandb_start_error(err, mode, "leave out --wandb, or set WANDB_MODE=offline") from None
        tables = {
            "tables/summary": table_rows(rep.groups, rep.metrics),
            "tables/comparisons": comparison_rows(rep.comparisons),
            "tables/selection": [row for c in rep.choices for row in c.rows()],
            "tables/runs": results_rows(rep.runs),
            "tables/failed_and_missing": not_ok_rows(rep.runs),
        }
        payload: dict[str, Any] = {name: _table(rows) for name, rows in tables.items() if rows}
        payload.update({f"figures/{f.stem.removeprefix(rep.name + '-')}": wandb.Image(str(f)) for f in rep.figures})
        run.log(payload)
        run.summary.update(
            {"finding": rep.sentence, "verdict": rep.verdict, "runs": len(rep.runs), "not_ok": len(rep.not_ok)}
        )
        run_dirs.append(Path(run.dir).parent)
        run.finish()
    wandb.teardown()  # waits until the run files are written out
    return run_dirs


def _table(rows: Sequence[dict[str, Any]]):
    import wandb

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    data = [[_plain(row.get(c)) for c in columns] for row in rows]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, int | float | str | bool) else str(value)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m normbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="run or sweep output dirs (outputs/..., multirun/...)")
    parser.add_argument("--out", help="output folder (default: <first dir>/report)")
    parser.add_argument("--metric", help="headline metric of the sentences and figures (default: val/acc if present)")
    parser.add_argument(
        "--select",
        help="a swept key (optim.lr) each norm is tuned over: its best value per setting on validation "
        "(default: the config's report.select)",
    )
    parser.add_argument("--select-on", help="the selection's metric (default: the headline's val/ twin)")
    parser.add_argument(
        "--flat-over", help="the swept key the controls must be flat across (default: the config's report.flat_over)"
    )
    parser.add_argument(
        "--flat-metric", help="the metric of that check (default: the config's report.flat_metric, else the headline)"
    )
    parser.add_argument("--wandb", action="store_true", help="also log one report run per experiment to W&B")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
    try:
        reports = analyse(
            load_runs(args.dirs), args.metric, args.select, args.select_on, args.flat_over, args.flat_metric
        )
        write_report(reports, args.dirs, out)
        if args.wandb:
            for run_dir in log_to_wandb(reports, args.dirs, out):
                print(f"W&B report run: {run_dir}")
    except NormbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for rep in reports:
        print(f"{rep.name}: {rep.sentence} [{rep.verdict}]")
        for kind, reason in rep.skipped.items():
            print(f"  skipped figure '{kind}': {reason}")
    print(out.resolve())
    return out


if __name__ == "__main__":
    main()
