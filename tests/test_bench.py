"""scripts/bench.py end to end in its smallest mode: every table is written, every cell is filled."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cli import cli_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
NORM_NAMES = ("none", "layer", "batch_masked")

TABLES = [
    "lightning_overhead",
    "norm_cost",
    "recurrent",
    "throughput",
    "data_pipeline",
    "sweep",
    "sweep_phases",
    "targets",
]


def test_quick_bench_fills_every_column_of_every_table(mr_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    sweep = "norm=layer data.batch_size=16 data.vocab_size=300 ++trainer.max_steps=2 callbacks=none threads=1"
    command = [
        *(sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out), "--device", "cpu"),
        *("--data-path", str(mr_file), "--rounds", "2", "--models", "transformer,gru"),
        *("--norms", "layer,batch_masked,power"),
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
    norm_rows = {row["norm"]: row for row in tables["norm_cost"]["rows"]}
    assert set(norm_rows) == {"layer", "batch_masked", "power", "batch_masked: packing only"}
    assert isinstance(norm_rows["power"]["vs batch_masked"], float)  # timed beside batch_masked in the same rounds
    assert norm_rows["batch_masked: packing only"]["target"] == "reported"
    assert {r["layer"] for r in tables["recurrent"]["rows"]} == {
        f"NormGRULayer norm={n}" for n in (*NORM_NAMES, "power")
    }
    assert {(r["model"], r["norm"]) for r in tables["throughput"]["rows"]} == {
        (m, n) for m in ("transformer", "gru") for n in ("layer", "batch_masked", "power")
    }
    assert tables["sweep"]["rows"][0]["runs"] == 1 and tables["sweep"]["rows"][0]["ok"] == 1
    phases = {row["phase"]: row for row in tables["sweep_phases"]["rows"]}
    assert {"job: fit", "job: eval", "job: logger", "outside jobs (Python start, Hydra)"} <= set(phases)
    fixed = tables["sweep"]["rows"][1]  # every phase's seconds but training's, per run: the fixed cost
    outside_fit = sum(row["total s"] for name, row in phases.items() if name != "job: fit")
    assert fixed["target"] == "<= 2.5 s per run" and fixed["s per run"] == pytest.approx(outside_fit)


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


def test_gpu_check_dry_mode_produces_every_table_and_column(mr_file: Path, tmp_path: Path) -> None:
    """scripts/gpu_check.sh --dry: the GPU check's steps on the CPU at tiny sizes, so CI sees each column."""
    from test_shakespeare import write_works

    out = tmp_path / "gpu_check"
    works = write_works(tmp_path / "works")
    command = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry", "--mr", str(mr_file), str(out)]
    proc = subprocess.run(
        [*command, f"data.path={works}"], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    tables = json.loads((out / "bench" / "bench.json").read_text())["tables"]
    assert list(tables) == ["norm_cost", "recurrent", "mfu", "targets"]
    no_peak_on_cpu = {"MFU %", "peak MiB"}  # a CPU has no data-sheet FLOP/s and no CUDA allocator
    for name, table in tables.items():
        for row in table["rows"]:
            assert set(row) == set(table["columns"]), (name, row)
            for column, value in row.items():
                if isinstance(value, int | float) and column not in no_peak_on_cpu:
                    assert math.isfinite(value), (name, column, value)
    norm_rows = tables["norm_cost"]["rows"]
    assert {"GB/s", "% of memory bandwidth", "dtype"} <= set(tables["norm_cost"]["columns"])
    assert {(r["norm"], r["dtype"]) for r in norm_rows if r["shape [B,T,C]"] == "4x32x64"} == {
        ("layer", "bfloat16"),
        ("batch_masked", "bfloat16"),
        ("batch_masked: packing only", "bfloat16"),
    }
    assert all(0 < r["% of memory bandwidth"] < 100 for r in norm_rows)
    recurrent = {r["layer"]: r for r in tables["recurrent"]["rows"]}
    assert set(recurrent) == {f"{c} norm={n}" for c in ("NormLSTMLayer", "NormGRULayer") for n in NORM_NAMES}
    assert recurrent["NormLSTMLayer norm=none"]["reference"] == "nn.LSTM (ATen, packed)"
    assert recurrent["NormGRULayer norm=layer"]["reference"] == "NormGRULayer norm=none"
    assert recurrent["NormGRULayer norm=layer"]["reference ms"] == recurrent["NormGRULayer norm=none"]["ours ms"]
    assert tables["mfu"]["rows"][0]["met"] == "-" and tables["mfu"]["rows"][0]["TFLOP/s"] > 0

    with (out / "entry.csv").open() as handle:
        jobs = list(csv.DictReader(handle))
    assert [(j["norm"], j["status"], j["steps"]) for j in jobs] == [("batch_step", "ok", "3"), ("layer", "ok", "3")]
    assert all(math.isfinite(float(j["test/bpc@len=512"])) and float(j["ms/step"]) > 0 for j in jobs)
    summary = (out / "gpu_check.md").read_text()
    for title in [t["title"] for t in tables.values()] + ["7. A catalogue entry at scale=gpu", "## The entry's report"]:
        assert title in summary, title
    assert "length_extrapolation_lm" in (out / "report" / "summary.md").read_text()
