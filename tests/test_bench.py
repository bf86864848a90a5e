"""scripts/bench.py end to end in its smallest mode: every table is written, every cell is filled."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cli import cli_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TABLES = ["lightning_overhead", "norm_cost", "throughput", "data_pipeline", "sweep", "sweep_phases", "targets"]


def test_quick_bench_fills_every_column_of_every_table(mr_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    sweep = "norm=layer data.batch_size=16 data.vocab_size=300 ++trainer.max_steps=2 callbacks=none threads=1"
    command = [
        *(sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out), "--device", "cpu"),
        *("--data-path", str(mr_file), "--rounds", "2", "--models", "transformer,gru", "--norms", "layer,batch_masked"),
        *("--sweep", sweep, "--set", "data.batch_size=8", "data.vocab_size=300", "data.max_len=16"),
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    tables = json.loads((out / "bench.json").read_text())["tables"]
    assert list(tables) == TABLES
    for name, table in tables.items():
        assert table["rows"], name
        header = (out / f"{name}.csv").read_text().splitlines()[0]
        assert header.split(",")[0] == table["columns"][0]
        for row in table["rows"]:
            assert set(row) == set(table["columns"]), (name, row)
            for column, value in row.items():
                if isinstance(value, int | float):
                    assert math.isfinite(value), (name, column, value)
                else:
                    assert str(value).strip(), (name, column)
        assert f"| {' | '.join(table['columns'])} |" in proc.stdout  # printed as a Markdown table
    assert {row["norm"] for row in tables["norm_cost"]["rows"]} == {"layer", "batch_masked"}
    assert {(r["model"], r["norm"]) for r in tables["throughput"]["rows"]} == {
        (m, n) for m in ("transformer", "gru") for n in ("layer", "batch_masked")
    }
    assert tables["sweep"]["rows"][0]["runs"] == 1 and tables["sweep"]["rows"][0]["ok"] == 1
    phases = {row["phase"] for row in tables["sweep_phases"]["rows"]}
    assert {"job: fit", "job: eval", "job: logger", "outside jobs (Python start, Hydra)"} <= phases


def test_scaleout_section_times_each_variant_from_real_jobs(mr_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    tiny = ("data.vocab_size=300", "data.max_len=16", "model.d_model=32", "model.d_ff=64", "model.n_layers=1")
    command = [
        *(sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--sections", "scaleout", "--out", str(out)),
        *("--device", "cpu", "--data-path", str(mr_file), "--set", *tiny),
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = json.loads((out / "bench.json").read_text())["tables"]["scaleout"]["rows"]
    assert [row["variant"] for row in rows] == [
        "1 process",
        "ddp x2, local statistics",
        "ddp x2, norm.sync=true",
        "ddp_spawn x2, local statistics",
    ]  # --quick leaves out the compiled variant (a minute of compilation)
    assert all(row["status"].startswith("ok") and row["model"] == "transformer" for row in rows), rows
    assert rows[0]["x 1 process"] == 1.0
    for row in rows:
        assert row["fit s"] > 0 and row["global batch"] == 32
        if "spawn" not in row["variant"]:  # ddp_spawn trains in spawned processes: only its fit time is seen
            assert row["ms per step"] > 0 and math.isfinite(row["start-up s"]) and row["status"] == "ok"
    jobs = sorted((out / "scaleout").glob("*/sweep/*/results.json"))
    assert len(jobs) == 4 and {json.loads(p.read_text())["world_size"] for p in jobs} == {1, 2}
