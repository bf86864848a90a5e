"""W&B workspaces from the catalogue's configs: written offline as JSON, each panel naming what runs really log."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_wandb_resume import offline_sweep  # noqa: F401  (the fixture)

from normbench.report.dashboard import compose_entry, entry_names, main

pytest.importorskip("wandb_workspaces")

ROOT = Path(__file__).resolve().parents[1]


def without_ids(node: Any) -> Any:
    """The spec without the random panel ids W&B generates."""
    if isinstance(node, dict):
        return {k: without_ids(v) for k, v in node.items() if k != "__id__"}
    return [without_ids(v) for v in node] if isinstance(node, list) else node


def dry_run(tmp_path: Path, *args: str) -> dict[str, dict]:
    out = tmp_path / "dashboards.json"
    main(["--dry-run", "--entity", "me", "--out", str(out), *args])
    return {
        w["displayName"].removeprefix("normbench: "): without_ids(w) for w in json.loads(out.read_text())["workspaces"]
    }


def panels(workspace: dict) -> dict[str, list[dict]]:
    sections = workspace["spec"]["section"]["panelBankConfig"]["sections"]
    return {s["name"]: s["panels"] for s in sections}


def named_metrics(workspace: dict) -> set[str]:
    """Every metric a panel reads: history keys of line plots, summary keys of bars and scatters."""
    names = set()
    for section in panels(workspace).values():
        for panel in section:
            config = panel["config"]
            names.update(m.removeprefix("summary_metrics.") for m in config.get("metrics", []))
            if "yAxis" in config:
                names.add(config["yAxis"].removeprefix("summary:"))
    return names


@pytest.fixture
def logged(offline_sweep: Path) -> dict:  # noqa: F811
    """A real offline run (batch_masked: every instrument on, the catalogue's extra evaluations): config, summary."""

    def norm(link: Path) -> str:
        return json.loads((link.resolve().parents[1] / "results.json").read_text())["norm"]

    (run,) = [link for link in (offline_sweep / "wandb").iterdir() if norm(link) == "batch_masked"]
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def config_value(config: dict, key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config


@pytest.mark.slow
def test_one_workspace_per_entry_filtered_to_its_group_grouped_by_norm_reading_logged_metrics(
    logged: dict, tmp_path: Path
) -> None:
    workspaces = dry_run(tmp_path)
    assert sorted(workspaces) == sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    for name, workspace in workspaces.items():
        (runset,) = workspace["spec"]["section"]["runSets"]
        assert runset["filters"]["filters"] == [
            {"key": {"section": "run", "name": "group"}, "op": "=", "value": name, "disabled": False}
        ]
        grouping = [g["name"] for g in runset["grouping"]]
        assert grouping[0] == "choices.value.norm" and all(g["section"] == "config" for g in runset["grouping"])
        entry = compose_entry(name)
        if entry.data.name == logged["config"]["data"]["name"]:  # an entry of the fixture's task (MR)
            for key in grouping:  # W&B's "a.value.b" is config key a.b: the runs' config holds each
                config_value(logged["config"], key.replace(".value", ""))
            missing = named_metrics(workspace) - set(logged["summary"])
            assert not missing, f"{name}: panels name metrics no run logs: {missing}"
        else:  # another task (causal_leak's LM, input_scale's numeric data): its own headline is drawn
            assert entry.report.metric in named_metrics(workspace), name
        assert set(panels(workspace)) == {"over training", "final", "report run (python -m normbench.report --wandb)"}

    small_batch = panels(workspaces["small_batch"])
    scatters = [p for p in small_batch["final"] if p["viewType"] == "Scatter Plot"]
    assert [p["config"]["xAxis"] for p in scatters] == ["config:data.value.batch_size", "config:optim.value.lr"]
    assert scatters[0]["config"] == {
        "chartTitle": "final test/acc vs data.batch_size",  # the entry's report.metric
        "xAxis": "config:data.value.batch_size",
        "yAxis": "summary:test/acc",
        "xAxisLogScale": True,
    }
    lines = [p["config"] for p in small_batch["over training"]]  # test/acc is logged once: its val twin
    assert lines[0]["metrics"] == ["val/acc"] and lines[0]["xAxis"] == "trainer/global_step"
    assert (lines[0]["groupAgg"], lines[0]["groupArea"]) == ("mean", "minmax")
    report = [json.dumps(p) for p in small_batch["report run (python -m normbench.report --wandb)"]]
    assert ['"tables/summary"' in p for p in report] == [True, False] and '"tables/runs"' in report[1]
    run_feed = workspaces["small_batch"]["spec"]["section"]["runSets"][0]["runFeed"]
    assert run_feed["columnOrder"] == ["run:displayName", "summary:finding", "summary:test/acc"]
    # report.metric of the config is the headline; evaluate settings become a bar of those metrics
    assert [p["config"]["metrics"] for p in panels(workspaces["causal_leak"])["over training"]][0] == [
        "val/bpc_train_eval_gap"
    ]
    (bar,) = [p for p in panels(workspaces["length_extrapolation"])["final"] if "other settings" in json.dumps(p)]
    assert bar["config"]["metrics"] == [f"summary_metrics.test/acc@len={n}" for n in (16, 32, 64)]
    assert [g["name"] for g in workspaces["ddp"]["spec"]["section"]["runSets"][0]["grouping"]] == [
        "choices.value.norm",
        "norm.value.sync",
        "optim.value.lr",  # the learning-rate grid is swept too (two stages)
    ]


def test_gpu_scale_groups_by_the_swept_model_too(tmp_path: Path) -> None:
    (runset,) = dry_run(tmp_path, "--experiment", "small_batch", "--scale", "gpu")["small_batch"]["spec"]["section"][
        "runSets"
    ]
    assert [g["name"] for g in runset["grouping"]] == [
        "choices.value.norm",
        "choices.value.model",
        "data.value.batch_size",
        "optim.value.lr",  # the learning-rate grid: each norm's best value is the report's choice
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dry-run", "--entity", "me", "--experiment", "nope"],
            "error: --experiment nope is not a catalogue entry; ",
        ),
        (["--dry-run", "--experiment", "ddp"], "error: --dry-run needs --entity"),
        (
            ["--dry-run", "--entity", "me", "--scale", "tpu"],
            "error: --scale tpu is not a scale; accepted: cpu, gpu, none",
        ),
        (["--entity", "me", "--experiment", "ddp"], "error: W&B could not save the workspaces (No API key"),
    ],
)
def test_bad_input_and_saving_without_a_login_give_one_line(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
    if "catalogue" in message:
        assert err.strip().endswith("accepted: " + ", ".join(entry_names()))
