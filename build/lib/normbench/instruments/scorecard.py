"""The probe scorecard: where a norm breaks, measured in seconds on freshly initialised models, no training.

``python -m normbench.instruments.scorecard norm=batch,layer,custom norm._target_=... [model=transformer,lstm]
[data=... data.path=...] [--distributed] [--out DIR]`` composes the config exactly as ``train.py`` does
(any override, ``hydra.searchpath`` included; comma lists are swept), builds each model x norm with
fresh weights on real batches of the task, and measures each property with the instruments of
``normbench.instruments.probes`` and ``normbench.instruments.callbacks`` (the code training logs with).
Each value is a largest
(or mean) absolute change of the outputs, judged against a tolerance: pass, fail, refused (the norm
stops with its one-line error) or n/a, with one word why. Writes scorecard.csv/.json/.md into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
from collections.abc import Callable
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from normbench.errors import BatchStatisticsError, user_errors_as_one_line

DEFAULT_MODELS = ("transformer", "lstm")  # one of each family; GRU shares the LSTM's cell design
#: torch threads when the config's `threads` is null: the probes' small batches run fastest on one
#: thread, and several threads on busy shared cores are 5-10x slower (as train.yaml's `threads` says)
THREADS = 1
#: float32 rounding (~1e-7 per operation on outputs of order 1) grows through the layers, and more where
#: per-step statistics divide by the spread of a few sequences (batch_step, Transformer: 9e-6 measured);
#: the dependences the probes exist for measure 1e-2 and more on fresh models: 1e-4 lies between
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Property:
    key: str
    title: str
    fails_because: str  # the one word for a failure
    what: str  # the measured value, for the README and the JSON


PROPERTIES = (
    Property("partner", "batch independence", "batch-mates", "mean std of logits over 4 sets of batch mates"),
    Property("causal", "causality", "future", "max change at positions <= t when token t+4 changes (train mode)"),
    Property("padding", "padding invariance", "padding", "max change at real tokens with 16 more pads (train mode)"),
    Property("train_eval", "train/eval consistency", "statistics", "max train- vs eval-mode gap after warm-up"),
    Property("batch_one", "batch size one", "own-stats", "max change of a sequence alone vs in its batch of 32"),
    Property("length", "length", "length", "max eval-mode change past the length the statistics saw"),
    Property("distributed", "distributed equivalence", "unsynced", "max gap, 2 synced gloo processes vs joined"),
)


@dataclass(frozen=True)
class Settings:
    """How much data each probe uses (fixed so that scorecards compare)."""

    probe_batch: int = 32  # validation sequences in the probe batch (batch size one is compared with it)
    batch_one_rows: int = 4  # of which this many are also run alone
    extra_padding: int = 16
    warmup_batches: int = 20  # training batches of statistics warm-up (momentum 0.1: 12% of the initial value left)
    length_cut: int = 12  # the statistics' cut for the length property (MR snippets: ~25 tokens on average)
    distributed: bool = False  # two gloo processes: seconds more, so asked for with --distributed


@dataclass
class Score:
    norm: str
    model: str
    property: str
    value: float | None
    tolerance: float
    status: str  # pass | fail | refused | n/a
    why: str


REFUSED = "refused"


def judge(prop: Property, value: float | str | None) -> tuple[str, str]:
    """(status, one word why) of a measured value."""
    if value is None:
        return "n/a", "per-token" if prop.key == "distributed" else "not-causal"
    if value == REFUSED:
        return "refused", "too-few"  # the norm's own one-line error: too few values for batch statistics
    if not math.isfinite(value):
        return "fail", "non-finite"
    if value <= TOLERANCE:
        return "pass", "exact" if value == 0 else "rounding"
    return "fail", prop.fails_because


def _measured(probe: Callable[[], float | None]) -> float | str | None:
    try:
        return probe()
    except BatchStatisticsError:
        return REFUSED


def measure(cfg: DictConfig, datamodule: Any, settings: Settings) -> dict[str, float | str | None]:
    """Every property but the distributed one, on a fresh model of ``cfg`` (seeded by ``cfg.seed``)."""
    import lightning as L
    from hydra.utils import instantiate

    from normbench.instruments import probes
    from normbench.instruments.callbacks import BatchPartnerDependence, CausalLeakProbe
    from normbench.run.train import build_module

    def fresh(config: DictConfig):
        L.seed_everything(config.seed, verbose=False)
        return build_module(config, datamodule).eval()

    def instrument(name: str, cls: type):
        configured = (cfg.get("callbacks") or {}).get(name)
        return instantiate(configured) if configured else cls()  # the settings training uses

    module = fresh(cfg)
    encoder, pad_id = module.encoder, datamodule.pad_id
    val, train = datamodule.val_dataloader(), datamodule.train_dataloader()
    tokens, mask = val.collate_fn([val.dataset[i] for i in range(min(settings.probe_batch, len(val.dataset)))])[:2]
    warm = [(t, m) for t, m, _ in itertools.islice(iter(train), settings.warmup_batches)]
    causal_module = module
    if not getattr(encoder, "causal", False) and "causal" in cfg.model:  # a Transformer: its decoder form
        causal_cfg = deepcopy(cfg)
        causal_cfg.model.causal = True
        causal_module = fresh(causal_cfg)

    def in_batch_mode(probe: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            with probes.batch_statistics_mode(encoder):
                return probe()

        return run

    def train_eval() -> float:
        warmed = deepcopy(encoder)
        probes.warm_up_statistics(warmed, warm)
        return probes.mode_gap(warmed, tokens, mask)

    partner, leak = instrument("partner_dependence", BatchPartnerDependence), instrument("causal_leak", CausalLeakProbe)
    return {
        "partner": _measured(lambda: partner.measure(module, val, train)),
        "causal": _measured(lambda: leak.measure(causal_module, val)),
        "padding": _measured(
            in_batch_mode(lambda: probes.padding_dependence(encoder, tokens, mask, settings.extra_padding, pad_id))
        ),
        "train_eval": _measured(train_eval),
        "batch_one": _measured(
            in_batch_mode(lambda: probes.batch_one_gap(encoder, tokens, mask, settings.batch_one_rows))
        ),
        "length": _measured(lambda: probes.length_dependence(encoder, warm, tokens, mask, settings.length_cut)),
    }


def distributed_values(norm_cfgs: list[dict[str, Any]]) -> list[float | None]:
    """The distributed property of each norm config (one set of processes for all of them; a norm that
    appears under several models is measured once): None for norms without batch statistics."""
    from normbench.instruments.distributed_probe import synced_vs_joined
    from normbench.norm_factory import norm_factory

    unique = {json.dumps(c, sort_keys=True): c for c in norm_cfgs}
    batch_stats = [k for k, c in unique.items() if norm_factory(c)(8).uses_batch_stats]
    values = synced_vs_joined([unique[k] for k in batch_stats]) if batch_stats else []
    measured = dict(zip(batch_stats, values, strict=True))
    return [measured.get(json.dumps(c, sort_keys=True)) for c in norm_cfgs]


# --- command line -----------------------------------------------------------------------------------


def sweep(overrides: list[str]) -> list[list[str]]:
    """Every combination of the comma lists in ``overrides`` (``norm=batch,layer``), norm first; defaults:
    the ten built-in norms and one model of each family."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from normbench.norms import NORMS

    parsed = OverridesParser.create().parse_overrides(overrides)
    given = {o.key_or_group: o for o in parsed}
    defaults = {"norm": [f"norm={n}" for n in NORMS], "model": [f"model={m}" for m in DEFAULT_MODELS]}
    axes = [_values(given.pop(group)) if group in given else values for group, values in defaults.items()]
    return [list(combo) for combo in itertools.product(*axes, *(_values(o) for o in given.values()))]


def _values(override: Any) -> list[str]:
    """``norm=batch,layer`` -> ``["norm=batch", "norm=layer"]``; any other override as it was given."""
    if not override.is_choice_sweep():
        return [override.input_line]
    return [f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()]


def _choice(overrides: list[str], group: str) -> str:
    return next(o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == group)


def run(overrides: list[str], settings: Settings, config_dir: Path) -> list[Score]:
    """The scores of every combination of ``overrides`` (torch's thread count is put back afterwards)."""
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(overrides, settings, config_dir)
    finally:
        torch.set_num_threads(threads)


def _run(overrides: list[str], settings: Settings, config_dir: Path) -> list[Score]:
    from hydra import compose

    from normbench.cli.schemas import composing
    from normbench.norm_factory import check_before_data, norm_label
    from normbench.run.train import build_datamodule, set_threads

    scores: list[Score] = []
    datamodules: dict[str, Any] = {}
    jobs: list[tuple[str, str, dict[str, Any]]] = []  # (norm label, model, norm config) of each row
    with composing(config_dir):
        for combo in sweep(overrides):
            cfg = compose("train", overrides=combo)
            set_threads(THREADS if cfg.get("threads") is None else cfg.threads)
            norm_cfg = OmegaConf.to_container(cfg.norm, resolve=True)
            check_before_data(norm_cfg, OmegaConf.to_container(cfg.model, resolve=True))
            key = OmegaConf.to_yaml(cfg.data)
            if key not in datamodules:
                datamodules[key] = build_datamodule(cfg)
            norm, model = norm_label(norm_cfg, _choice(combo, "norm")), _choice(combo, "model")
            for prop, value in measure(cfg, datamodules[key], settings).items():
                scores.append(Score(norm, model, prop, value, TOLERANCE, "", ""))
            jobs.append((norm, model, norm_cfg))
    if settings.distributed:
        values = distributed_values([cfg for _, _, cfg in jobs])
        scores += [Score(n, m, "distributed", v, TOLERANCE, "", "") for (n, m, _), v in zip(jobs, values, strict=True)]
    props = {p.key: p for p in PROPERTIES}
    for score in scores:
        score.status, score.why = judge(props[score.property], score.value)
        score.value = None if score.value in (None, REFUSED) else float(score.value)
    return scores


def cell(score: Score) -> str:
    value = "-" if score.value is None else ("0" if score.value == 0 else f"{score.value:.3g}")
    return f"{value} {score.status} ({score.why})"


def table_rows(scores: list[Score]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the norm x property table (one row per norm and model)."""
    keys = list(dict.fromkeys(s.property for s in scores))
    titles = {p.key: p.title for p in PROPERTIES}
    by_row: dict[tuple[str, str], dict[str, Score]] = {}
    for s in scores:
        by_row.setdefault((s.norm, s.model), {})[s.property] = s
    rows = [[norm, model, *(cell(cells[k]) for k in keys)] for (norm, model), cells in by_row.items()]
    return ["norm", "model", *(titles[k] for k in keys)], rows


def write(scores: list[Score], out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "scorecard.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(scores[0])))
        writer.writeheader()
        writer.writerows(asdict(s) for s in scores)
    record = {
        "command": command,
        "tolerance": TOLERANCE,
        "properties": {p.key: {"title": p.title, "value": p.what, "fails": p.fails_because} for p in PROPERTIES},
        "scores": [asdict(s) for s in scores],
    }
    (out / "scorecard.json").write_text(json.dumps(record, indent=1) + "\n")
    header, rows = table_rows(scores)
    lines = [f"`{command}` (tolerance {TOLERANCE:g})", "", "| " + " | ".join(header) + " |"]
    lines += ["|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]
    (out / "scorecard.md").write_text("\n".join(lines) + "\n")


def show(scores: list[Score]) -> None:
    from rich.console import Console
    from rich.table import Table

    header, rows = table_rows(scores)
    table = Table(*header, title=f"normbench probe scorecard (tolerance {TOLERANCE:g})")
    colours = {"pass": "green", "fail": "red", "refused": "yellow"}
    for row in rows:
        styled = [next((f"[{c}]{v}[/]" for s, c in colours.items() if f" {s} (" in v), v) for v in row[2:]]
        table.add_row(*row[:2], *styled)
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> None:
    from normbench.cli.choices import check_group_choices
    from normbench.run.train import DEFAULT_CONFIG_DIR

    parser = argparse.ArgumentParser(
        prog="python -m normbench.instruments.scorecard", description=__doc__.splitlines()[0]
    )
    parser.add_argument("overrides", nargs="*", help="config overrides as for train.py; comma lists are swept")
    parser.add_argument("--out", type=Path, default=Path("scorecard"), help="where the CSV/JSON/Markdown go")
    parser.add_argument("--distributed", action="store_true", help="also the distributed property (2 gloo processes)")
    parser.add_argument("--warmup-batches", type=int, default=Settings.warmup_batches, help="statistics warm-up")
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    settings = Settings(warmup_batches=args.warmup_batches, distributed=args.distributed)
    with user_errors_as_one_line():
        check_group_choices(args.overrides, args.config_dir)
        scores = run(args.overrides, settings, args.config_dir)
    command = " ".join(
        ["python -m normbench.instruments.scorecard", *(args.overrides), *(["--distributed"] * args.distributed)]
    )
    write(scores, args.out, command)
    show(scores)
    print(args.out / "scorecard.md", flush=True)


if __name__ == "__main__":
    main()
