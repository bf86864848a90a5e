"""`python train.py --help`: the normbench header through Hydra's help template, and Hydra's group list kept."""

from pathlib import Path

from cli import ROOT, train

MAIN_GROUPS = ("model", "norm", "data", "trainer", "logger", "callbacks", "experiment", "scale")


def test_help_says_what_normbench_is_then_lists_every_config_group_and_its_options(tmp_path: Path) -> None:
    out = train(["--help"], tmp_path).stdout
    header, groups = out.split("== Configuration groups ==")
    assert header.startswith("normbench: where batch normalization breaks down in sequence models")
    assert all(f"{group} (" in header for group in MAIN_GROUPS)  # each main group is explained
    assert "README.md" in header and "scripts/catalogue/" in header and "normbench.report" in header
    conf = ROOT / "conf"
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        options = ", ".join(sorted(f.stem for f in group.glob("*.yaml")))
        assert f"\n{group.name}: {options}\n" in groups  # Hydra's own generated list, every group
    assert "--hydra-help" in groups
