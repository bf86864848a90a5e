"""``python -m normbench.report.index docs/findings [--readme README.md]``: one page for the whole catalogue.

Every entry's report (``python -m normbench.report``) writes ``finding.json``: its computed sentence, verdict,
run count, times and headline figure. This collects those of ``<dir>/*/`` into ``<dir>/README.md``, a table a
reader opens first, and with ``--readme`` writes the same table into the README between the markers
``<!-- findings:begin -->`` and ``<!-- findings:end -->``, so the README's findings are generated, never typed.
Entries whose folder has no ``finding.json`` (reports from before it existed) are listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from normbench.report.pipeline import FINDINGS_FILE

BEGIN, END = "<!-- findings:begin -->", "<!-- findings:end -->"
VERDICTS = {
    "clear": "clear of zero (95% CI)",
    "against": "clear of zero (95% CI), batch statistics ahead of the per-token norm",
    "no CI": "one seed: no CI",
}


def read_findings(root: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[Path]]:
    """``(entry folder, record)`` for every finding under ``root/*/``, and the folders that have none."""
    found, without = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        path = folder / FINDINGS_FILE
        if not path.is_file():
            without.append(folder)
            continue
        found += [(folder, record) for record in json.loads(path.read_text())]
    return found, without


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def table(findings: Sequence[tuple[Path, dict[str, Any]]], base: Path) -> str:
    """The catalogue as a Markdown table, its links relative to ``base`` (the folder of the page)."""
    lines = [
        "| entry | finding (computed by the report) | verdict | runs | sweep time | report |",
        "|---|---|---|---|---|---|",
    ]
    for folder, rec in findings:
        link = os.path.relpath(folder / "summary.md", base)
        figure = (
            f"<br>![{rec['experiment']}]({os.path.relpath(folder / rec['figure'], base)})" if rec.get("figure") else ""
        )
        flat = (
            ""
            if rec.get("controls_flat") is None
            else ("; controls flat" if rec["controls_flat"] else "; controls NOT flat")
        )
        runs = f"{rec['runs']}" + (f" ({rec['not_ok']} not ok)" if rec.get("not_ok") else "")
        verdict = VERDICTS.get(rec["verdict"], rec["verdict"]) + flat
        lines.append(
            f"| {rec['experiment']} | {rec['sentence']}{figure} | {verdict} | {runs} | "
            f"{_minutes(rec.get('sweep_span_s'))} | [summary]({link}) |"
        )
    return "\n".join(lines)


def total(findings: Sequence[tuple[Path, dict[str, Any]]]) -> str:
    """The whole catalogue's cost: its runs and the sum of the entries' sweep times (they run one after another)."""
    spans = [rec.get("sweep_span_s") for _, rec in findings]
    known = [span for span in spans if span is not None]
    text = f"In all: {sum(rec['runs'] for _, rec in findings)} runs in {_minutes(sum(known))} of sweeps"
    if len(known) < len(spans):
        text += f" ({len(spans) - len(known)} without a sweep time)"
    return text + ", each entry's time from its first run's start to its last run's end."


def page(root: Path, base: Path) -> str:
    findings, without = read_findings(root)
    text = table(findings, base)
    if findings:
        text += "\n\n" + total(findings)
    if without:
        names = ", ".join(os.path.relpath(p, base) for p in without)
        text += f"\n\nNot yet reported with a finding.json (reports from before the protocol): {names}."
    return text + "\n"


def write_readme_section(
    readme: Path, section: str, begin: str = BEGIN, end: str = END, what: str = "the findings"
) -> None:
    """Replace what lies between the markers ``begin`` and ``end`` in ``readme`` with ``section``."""
    text = readme.read_text()
    if begin not in text or end not in text:
        print(f"error: {readme} has no {begin} ... {end} markers; add them where {what} go", file=sys.stderr)
        sys.exit(2)
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{section}{end}{tail}")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m normbench.report.index", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the folder of the entries' report folders (docs/findings)")
    parser.add_argument("--readme", help="also write the table between the findings markers of this README")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root} is not a directory; pass the folder that holds the entries' reports", file=sys.stderr)
        sys.exit(2)
    out = root / "README.md"
    out.write_text(
        "# The catalogue\n\nOne row per entry: its report's sentence, verdict and cost.\n\n" + page(root, root)
    )
    if args.readme:
        readme = Path(args.readme)
        write_readme_section(readme, page(root, readme.parent))
    print(out.resolve())
    return out


if __name__ == "__main__":
    main()
