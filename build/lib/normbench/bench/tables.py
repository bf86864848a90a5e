"""The benchmark's output: one table per measurement, printed as Markdown (or with rich) and written as
CSV files plus one JSON file with every table and the conditions they were measured under."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    name: str  # file stem of its CSV
    title: str
    rows: list[dict[str, Any]]
    note: str = ""
    columns: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.columns = list(dict.fromkeys(key for row in self.rows for key in row))


def cell(value: Any) -> str:
    """Numbers with 3-4 significant figures; ratios keep 3 decimals."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.3f}"
    return f"{value:.3g}"


def markdown(table: Table) -> str:
    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [table.note, ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    for row in table.rows:
        lines.append("| " + " | ".join(cell(row.get(column, "")) for column in table.columns) + " |")
    return "\n".join(lines) + "\n"


def print_tables(tables: list[Table], style: str) -> None:
    if style == "rich":
        from rich.console import Console
        from rich.table import Table as RichTable

        console = Console()
        for table in tables:
            shown = RichTable(title=table.title, caption=table.note or None)
            for column in table.columns:
                shown.add_column(column)
            for row in table.rows:
                shown.add_row(*(cell(row.get(column, "")) for column in table.columns))
            console.print(shown)
        return
    print("\n".join(markdown(table) for table in tables), flush=True)


def write_outputs(tables: list[Table], meta: dict[str, Any], out_dir: Path) -> list[Path]:
    """``<name>.csv`` per table and ``bench.json`` with all of them and ``meta``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        path = out_dir / f"{table.name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=table.columns)
            writer.writeheader()
            writer.writerows(table.rows)
        written.append(path)
    payload = {
        "meta": meta,
        "tables": {t.name: {"title": t.title, "note": t.note, "columns": t.columns, "rows": t.rows} for t in tables},
    }
    path = out_dir / "bench.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return [*written, path]


def targets_table(tables: list[Table]) -> Table:
    """Every row with a target, from every table, in one place."""
    rows = []
    for table in tables:
        for row in table.rows:
            if str(row.get("target", "reported")) == "reported" or row.get("met", "-") == "-":  # no verdict
                continue
            case = next(str(row[c]) for c in table.columns if c not in ("target", "met"))
            if "shape [B,T,C]" in row:  # a section measured at two sizes names its rows by both
                case += f" {row['shape [B,T,C]']}" + (f" {row['dtype']}" if "dtype" in row else "")
            measured = next((row[c] for c in ("ratio", "loader / model", "wall s", "MFU %") if c in row), float("nan"))
            rows.append(
                {"section": table.title, "case": case, "measured": measured, "target": row["target"], "met": row["met"]}
            )
    return Table("targets", "Targets", rows)
