"""``hydra/sweeper=job_list hydra.sweeper.jobs=FILE``: Hydra's basic sweeper over the lines of FILE, each one job's
overrides crossed with the command line's sweep (normbench.cli.job_list), launched as one batch by the configured
launcher (joblib's workers take the next job as each one ends). Hydra runs this file without registering it as a
module, so nothing in it may need its own module at class creation (postponed annotations would)."""

from dataclasses import dataclass
from typing import Any, Optional  # no PEP 604 unions here: OmegaConf reads these types, and Hydra imports this

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from omegaconf import MISSING

from normbench.cli.job_list import jobs, read_lines


@dataclass
class JobListSweeperConf:
    _target_: str = "hydra_plugins.normbench_job_list.job_list_sweeper.JobListSweeper"
    jobs: str = MISSING  # a file: one job's overrides per line
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(group="hydra/sweeper", name="job_list", node=JobListSweeperConf, provider="normbench")


class JobListSweeper(BasicSweeper):
    def __init__(self, jobs: str, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        super().__init__(max_batch_size, params)
        self.lines = read_lines(jobs)

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]
        listed: Any = jobs(overrides, self.lines)
        return list(BasicSweeper.split_overrides_to_chunks(listed, max_batch_size))
