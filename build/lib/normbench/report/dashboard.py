"""``python -m normbench.report.dashboard``: one W&B workspace per catalogue entry, built with W&B's own library for it
(``wandb-workspaces``, extra ``dashboard``) from the same description of the entry the report uses.

Each entry's description is its ``conf/experiment/<name>.yaml`` composed by Hydra: the group
(``experiment_name``), the headline metric (``report.metric``, else the report's default), the swept keys
(``hydra.sweeper.params``), the instruments it keeps on and the extra evaluations (``evaluate``). Its
workspace holds the entry's runs grouped by norm and swept setting: the headline metric and the
instruments over training (mean and min-max over seeds), the final headline metric against each swept
key and per norm, and the ``job_type=report`` run's tables, its finding pinned in the runs table.
``--dry-run`` writes the workspaces as JSON without a server or an API key.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError, NormbenchError
from normbench.instruments.metrics import HEADLINE, INSTRUMENTS, TRAIN_EVAL_GAP
from normbench.report.summary import PRIMARY_METRICS, metric_leaf

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"
#: instruments drawn over training: the report's headline ones and the total gradient norm
LINE_INSTRUMENTS = (*HEADLINE, "grad_norm/total")
#: Lightning's x-axis of every logged metric
STEP = "trainer/global_step"
#: config groups whose choice W&B finds under the run config's ``choices`` (normbench.run.train)
GROUPS_KEY = "choices"


@dataclass(frozen=True)
class Entry:
    """What a catalogue entry measures, read from its experiment config."""

    name: str
    metric: str
    swept: dict[str, list[str]]  # W&B config keys swept (not seed, norm) over more than one value: their values
    group_by: tuple[str, ...]  # W&B config keys the runs are grouped by: the norm, then the swept keys
    instruments: tuple[str, ...]
    evaluated: tuple[str, ...]  # test metrics at other lengths / batch sizes (conf `evaluate`)


def entry_names(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The catalogue: one entry per ``conf/experiment/*.yaml``."""
    return sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))


@functools.lru_cache(maxsize=64)
def compose_entry(name: str, overrides: tuple[str, ...] = (), config_dir: Path = CONFIG_DIR) -> Any:
    """The entry's full config, Hydra's part included, as ``python train.py -m experiment=<name>`` composes it
    (read only: one object per arguments)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True)


def sweep_values(params: dict[str, str]) -> dict[str, list[str]]:
    """``hydra.sweeper.params`` as Hydra's override parser reads them: each key's values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {
        o.key_or_group: list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        for o in parsed
    }


def describe(name: str, overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> Entry:
    """The entry as its config states it; the headline metric falls back to the report's first default."""
    cfg = compose_entry(name, tuple(overrides), config_dir)
    groups = {p.name for p in config_dir.iterdir() if p.is_dir()}
    values = sweep_values(dict(cfg.hydra.sweeper.params or {}))
    swept = {
        f"{GROUPS_KEY}.{k}" if k in groups else k: v
        for k, v in values.items()
        if len(v) > 1 and k not in ("seed", "norm")
    }
    group_by = (f"{GROUPS_KEY}.norm", *swept)  # each group: one norm at one setting, its seeds
    metric = (cfg.get("report") or {}).get("metric") or PRIMARY_METRICS[0]
    on = {k for k, v in (cfg.get("callbacks") or {}).items() if v}
    instruments = tuple(k for k in LINE_INSTRUMENTS if _callback(k) in on and k != metric and _logged_for(k, metric))
    return Entry(cfg.experiment_name, metric, swept, group_by, instruments, _evaluated(metric, cfg.evaluate))


def _logged_in_training(metric: str) -> str:
    """A test metric is logged once, after training; over training its validation twin is drawn."""
    return "val/" + metric.removeprefix("test/") if metric.startswith("test/") and "@" not in metric else metric


def _logged_for(instrument: str, metric: str) -> bool:
    """The train/eval gap is logged in accuracy points by a classifier and in bits by a language model: keep
    the one the entry's metric says its runs log."""
    if instrument not in TRAIN_EVAL_GAP.headline:
        return True
    return metric_leaf(instrument).startswith("bp") == metric_leaf(metric).startswith("bp")


def _callback(instrument: str) -> str | None:
    """The config of the instrument that logs ``instrument`` (its declaration in normbench.instruments.metrics)."""
    return next((i.config for i in INSTRUMENTS if i.declares(instrument)), None)


def _evaluated(metric: str, evaluate: Any) -> tuple[str, ...]:
    """The extra test metrics (normbench.instruments.evaluation) of the headline metric's kind, e.g.
    ``test/acc@len=32``; the evaluations measure accuracy, loss and a language model's bits, so a headline of
    another kind (``val/bpc_train_eval_gap``) gets the bits it is about, and any other loss."""
    leaf = metric_leaf(metric).removesuffix("_batch_stats")
    leaf = next((kind for kind in ("acc", "loss", "bpc", "bpt") if leaf.startswith(kind)), "loss")
    names = [f"test/{leaf}@len={n}" for n in evaluate.lengths or []]
    settings = [f"eval_batch={n}" for n in evaluate.batch_sizes or []]
    for at in settings + [f"pad_to={n}" for n in evaluate.get("pad_to") or []]:
        names += [f"test/{leaf}@{at}", f"test/{leaf}_batch_stats@{at}"]
    return tuple(names)


def workspace(entry: Entry, entity: str, project: str) -> Any:
    """The entry's W&B workspace (wandb_workspaces objects; nothing is sent until ``save()``)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    spread = {"groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"}
    over_training = [
        wr.LinePlot(title=f"{m} over training", x=STEP, y=[m], **spread)
        for m in (_logged_in_training(entry.metric), *entry.instruments)
    ]
    final = [wr.BarPlot(title=f"final {entry.metric} per norm", metrics=[wr.SummaryMetric(entry.metric)], **spread)]
    final += [
        wr.ScatterPlot(
            title=f"final {entry.metric} vs {key}",
            x=wr.Config(key),
            y=wr.SummaryMetric(entry.metric),
            log_x=True if key.endswith("batch_size") else None,  # batch sizes are swept in powers
        )
        for key in entry.swept
        if not key.startswith(GROUPS_KEY)  # a model or data choice has no axis
    ]
    if entry.evaluated:
        evaluated = [wr.SummaryMetric(m) for m in entry.evaluated]
        final.append(wr.BarPlot(title="test at other settings", metrics=evaluated, **spread))
    report = [wr.WeavePanelSummaryTable(table_name=name) for name in ("tables/summary", "tables/runs")]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"normbench: {entry.name}",
        sections=[
            ws.Section(name="over training", panels=over_training, is_open=True),
            ws.Section(name="final", panels=final, is_open=True),
            ws.Section(name="report run (python -m normbench.report --wandb)", panels=report, is_open=True),
        ],
        runset_settings=ws.RunsetSettings(
            filters=[expr.Metric("Group") == entry.name],
            groupby=[expr.Config(k) for k in entry.group_by],
            # the runs table beside the panels: the report run's finding, every run's final headline metric
            pinned_columns=["summary:finding", f"summary:{entry.metric}"],
        ),
    )


def spec(workspace: Any) -> dict[str, Any]:
    """The workspace as W&B stores it (what ``save()`` sends), built offline."""
    return workspace._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m normbench.report.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity (default: yours)")
    parser.add_argument("--project", help="W&B project (default: conf/logger/wandb.yaml's, normbench)")
    parser.add_argument("--experiment", nargs="+", help="catalogue entries (default: all)")
    parser.add_argument("--scale", help="the entries' sweep at this scale (cpu, gpu; default: the entry's own)")
    parser.add_argument("--dry-run", action="store_true", help="write the workspaces as JSON instead of saving")
    parser.add_argument("--out", help="with --dry-run: the JSON file (default: stdout)")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> list[tuple[Entry, Any]]:
    """The chosen entries and their workspaces; a name that is no entry (or no scale) is refused."""
    names = entry_names()
    for name in args.experiment or []:
        if name not in names:
            raise ConfigError(f"--experiment {name} is not a catalogue entry; accepted: {', '.join(names)}")
    scales = sorted(p.stem for p in (CONFIG_DIR / "scale").glob("*.yaml"))
    if args.scale is not None and args.scale not in scales:
        raise ConfigError(f"--scale {args.scale} is not a scale; accepted: {', '.join(scales)}")
    if args.dry_run and not args.entity:
        raise ConfigError("--dry-run needs --entity (or WANDB_ENTITY): a workspace names its entity")
    overrides = [f"scale={args.scale}"] if args.scale else []
    entries = [describe(name, overrides) for name in args.experiment or names]
    project = args.project or compose_entry(entries[0].name).logger.project
    entity = args.entity or _default_entity()
    return [(entry, workspace(entry, entity, project)) for entry in entries]


def _default_entity() -> str:
    import wandb

    return wandb.Api().default_entity


def main(argv: Sequence[str] | None = None) -> None:
    from normbench.wandb_start import wandb_start_error, wandb_start_errors

    args = parse_args(argv)
    try:
        try:
            built = build(args)
            if args.dry_run:
                text = json.dumps({"workspaces": [spec(w) for _, w in built]}, indent=1) + "\n"
                Path(args.out).write_text(text) if args.out else sys.stdout.write(text)
                return
            for entry, ws in built:
                ws.save()
                print(f"{entry.name}: {ws.url}")
        except wandb_start_errors() as err:
            raise wandb_start_error(
                err, "online", "write them as JSON with --dry-run --entity E", "save the workspaces"
            ) from None
    except NormbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
