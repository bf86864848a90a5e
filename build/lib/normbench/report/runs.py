"""Find and read the Hydra job dirs of finished, failed and killed runs, and decide what was swept.

A job dir is a folder holding ``.hydra/config.yaml``. Its ``results.json`` (``normbench.results``) says how
the run ended; a job dir without one is a run that was killed before it could write it (``missing``).
Within one experiment the swept settings are the command-line/sweeper overrides whose values differ
between runs; every other config difference makes the runs incomparable and is refused.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from normbench.errors import NormbenchError
from normbench.instruments.metrics import HEADLINE, SAMPLED, late_mean
from normbench.results import RESULTS_FILE

#: config parts that say where and how a run is recorded, not what it computes: never a reason to refuse
RECORD_KEEPING = ("logger", "callbacks", "checkpoint", "tags", "resume", "ckpt_path", "experiment_name", "report")
MISSING = "missing"


class ReportError(NormbenchError, ValueError):
    """The report's input cannot be read or its runs cannot be compared."""


@dataclass
class Run:
    """One Hydra job: its record (``{}`` when missing), its overrides and its resolved, flattened config."""

    job_dir: Path
    record: dict[str, Any]
    overrides: dict[str, Any]
    config: dict[str, Any]
    choices: dict[str, str]
    excluded: tuple[str, ...] = ()
    #: swept values of this run within its experiment (filled by `sweep_settings`)
    settings: dict[str, Any] = field(default_factory=dict)
    _values: dict[str, float] | None = field(default=None, init=False, repr=False)

    @property
    def status(self) -> str:
        return str(self.record.get("status", MISSING))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str:
        if self.status == MISSING:
            return f"no {RESULTS_FILE}: the run was killed or is still running"
        return str(self.record.get("error") or "")

    def key(self, name: str) -> Any:
        """A key config value (`KEY_FIELDS`): from results.json, else the job's own config."""
        if name in self.record:
            return self.record[name]
        fallback = {
            "experiment": self.config.get("experiment_name"),
            "batch_size": self.config.get("data.batch_size"),
            "seed": self.config.get("seed"),
        }
        return fallback.get(name, self.choices.get(name))

    @property
    def experiment(self) -> str:
        return str(self.key("experiment"))

    @property
    def norm(self) -> str:
        return str(self.key("norm"))

    @property
    def model(self) -> str:
        return str(self.key("model"))

    @property
    def seed(self) -> Any:
        return self.key("seed")

    def values(self) -> dict[str, float | int]:
        """Every final number of the run, flattened: metrics, instruments, wall/step time, steps, data statistics."""
        if self._values is not None:
            return self._values
        out: dict[str, float] = {}
        for part in ("metrics", "instruments"):
            out.update(flatten(self.record.get(part) or {}, sep="/"))
        for name, points in self.series().items():
            if name in SAMPLED and points:  # samples of training batches: their late mean, not the last batch
                out[name] = late_mean(points)
            elif name in HEADLINE and name not in out and points:  # a training-time instrument's last value (runs
                out[name] = points[-1][1]  # that evaluated a best checkpoint kept only its series)
        for name in ("wall_time_s", "train_step_s", "global_step", "num_params"):
            if name in self.record:
                out[name] = self.record[name]
        out.update(flatten(self.record.get("data_stats") or {}, prefix="data_stats/", sep="/"))
        self._values = {k: v for k, v in out.items() if _is_number(v)}
        return self._values

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Instrument time series ``{name: [(step, value), ...]}`` (optional in results.json)."""
        raw = self.record.get("series") or {}
        return {
            name: [(float(s), float(v)) for s, v in points if _is_number(v) and math.isfinite(float(v))]
            for name, points in raw.items()
        }

    def setting(self, key: str) -> Any:
        """This run's value of an override key: the override itself, else the group choice, else the config."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return self.choices[key]
        return self.config.get(key)


def flatten(tree: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}{sep}", sep))
        else:
            out[name] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def hashable(value: Any) -> Any:
    """Lists and dicts (possible override values) as their JSON text, so settings can be grouped."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def find_job_dirs(root: Path) -> list[Path]:
    """Every Hydra job dir under ``root`` (``root`` itself included); job dirs are not searched further."""
    found = []
    for here, subdirs, _ in os.walk(root):
        if (Path(here) / ".hydra" / "config.yaml").is_file():
            found.append(Path(here))
            subdirs.clear()
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return found


def parse_overrides(lines: Sequence[str]) -> dict[str, Any]:
    """Hydra override strings -> ``{key: value}`` with Hydra's own parser (``data.batch_size=8`` -> 8)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        parsed[override.key_or_group] = "~" if override.is_delete() else hashable(override.value())
    return parsed


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _resolved_config(job_dir: Path) -> dict[str, Any]:
    """The job's config as Hydra saved it, resolved where possible (for runs without results.json)."""
    conf = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    try:
        return OmegaConf.to_container(conf, resolve=True)
    except Exception:  # noqa: BLE001  (a resolver that only exists inside the Hydra run)
        return OmegaConf.to_container(conf, resolve=False)


def load_run(job_dir: Path) -> Run:
    hydra_dir = job_dir / ".hydra"
    results_file = job_dir / RESULTS_FILE
    try:
        record = json.loads(results_file.read_text()) if results_file.is_file() else {}
    except ValueError as err:
        raise ReportError(f"{results_file} is not valid JSON ({err}); delete it to list the run as missing") from None
    hydra_cfg = (_read_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra", {})
    choices = {k: v for k, v in (hydra_cfg.get("runtime", {}).get("choices") or {}).items() if v and "/" not in k}
    excluded = tuple(hydra_cfg.get("job", {}).get("config", {}).get("override_dirname", {}).get("exclude_keys", ()))
    config = record.get("config") or _resolved_config(job_dir)
    return Run(
        job_dir=job_dir,
        record=record,
        overrides=parse_overrides(_read_yaml(hydra_dir / "overrides.yaml") or []),
        config=flatten(config),
        choices=choices,
        excluded=excluded,
    )


def load_runs(dirs: Iterable[str | os.PathLike]) -> list[Run]:
    """All job dirs under the given dirs (each job once), or a `ReportError` naming the dir that has none."""
    runs: dict[Path, Run] = {}
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise ReportError(f"{root} is not a directory; pass output dirs of train.py (outputs/... or multirun/...)")
        job_dirs = find_job_dirs(root)
        if not job_dirs:
            raise ReportError(f"{root} holds no Hydra job dir (a folder with .hydra/config.yaml) of train.py")
        for job_dir in job_dirs:
            runs.setdefault(job_dir.resolve(), load_run(job_dir.resolve()))
    return list(runs.values())


def configured(runs: Iterable[Run], key: str) -> str | None:
    """An experiment's config value of ``key`` (``report.select``, ...), the same in all its runs; None if unset."""
    values = sorted({str(run.config[key]) for run in runs if run.config.get(key) is not None})
    return values[0] if values else None


def by_experiment(runs: Iterable[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.experiment].append(run)
    return dict(sorted(groups.items()))


def _ignored(key: str, runs: Sequence[Run]) -> bool:
    prefixes = set(RECORD_KEEPING) | {k for run in runs for k in run.excluded}
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def sweep_settings(runs: Sequence[Run]) -> list[str]:
    """The swept keys of one experiment's runs (overrides whose values differ; not seed, not norm),
    stored on each run as ``run.settings``; returns them sorted, ``model`` first."""
    keys = {k for run in runs for k in run.overrides if not _ignored(k, runs)} - {"seed", "norm", "experiment"}
    swept = sorted((k for k in keys if len({hashable(run.setting(k)) for run in runs}) > 1), key=_setting_order)
    for run in runs:
        run.settings = {k: hashable(run.setting(k)) for k in swept}
    return swept


def _setting_order(key: str) -> tuple[int, str]:
    return (0 if key == "model" else 1, key)


def _fmt_values(values: Iterable[Any], limit: int = 4) -> str:
    shown = sorted({str(v) for v in values})
    return ", ".join(shown[:limit]) + (f", ... ({len(shown)} values)" if len(shown) > limit else "")


def check_comparable(experiment: str, runs: Sequence[Run], swept: Sequence[str]) -> None:
    """Refuse runs of one experiment that differ in a config value no swept key, seed or norm explains,
    and two runs of the same setting, norm and seed."""
    seen: dict[tuple, Run] = {}
    for run in runs:
        ident = (tuple(run.settings.items()), run.norm, run.seed)
        if ident in seen:
            what = " ".join(f"{k}={v}" for k, v in [*run.settings.items(), ("norm", run.norm), ("seed", run.seed)])
            raise ReportError(
                f"experiment {experiment}: two runs of {what} ({seen[ident].job_dir} and {run.job_dir}); "
                "pass the dirs of one of them"
            )
        seen[ident] = run
    # killed runs are listed, not compared: their saved config may hold interpolations only Hydra resolves
    compared = [r for r in runs if r.status != MISSING]
    explainers = [*swept, "norm", "seed"]
    keys = {k for run in compared for k in [*run.config, *run.choices]}
    for key in sorted(keys, key=lambda k: (k.count("."), k)):
        if _ignored(key, compared) or any(key == s or key.startswith(s + ".") for s in explainers):
            continue
        values = [hashable(run.choices.get(key, run.config.get(key))) for run in compared]
        if len(set(values)) <= 1:
            continue
        if all(v == run.seed for v, run in zip(values, compared, strict=True)):
            continue  # a copy of the seed (data.shuffle_seed: ${seed})
        if any(_determined_by(s, key, compared) for s in swept):
            continue  # interpolated from a swept value
        raise ReportError(
            f"experiment {experiment}: runs differ in {key} ({_fmt_values(values)}), which is neither swept "
            f"nor the norm; report them separately or sweep {key}"
        )


def _determined_by(swept_key: str, key: str, runs: Sequence[Run]) -> bool:
    seen: dict[Any, Any] = {}
    for run in runs:
        value = hashable(run.choices.get(key, run.config.get(key)))
        if seen.setdefault(run.settings[swept_key], value) != value:
            return False
    return True
