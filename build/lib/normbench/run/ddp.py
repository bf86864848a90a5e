"""DDP inside a Hydra multirun, and batches padded alike on every process.

Lightning's ``strategy=ddp`` starts the other processes of a job by running the script again with the
same command line (its ``_SubprocessScriptLauncher``; under Hydra it adds ``hydra.run.dir=<run dir>``).
In a multirun that command line is the whole sweep (``-m norm=batch,layer ...``) and the run dir is not
the job's, so every child would start the sweep over. `ddp_job` makes the relaunch job-aware: while a
multirun job runs, the command line Lightning copies is this job's own overrides and the run dir is the
job's dir, so each child is a single run of exactly this job, writing into its dir; afterwards the
process group and the variables the launcher set are removed, so the next job starts its own processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from omegaconf import DictConfig, read_write
from torch import Tensor

from normbench.distributed import distributed_world
from normbench.errors import ConfigError
from normbench.instruments.probes import pad_to

#: what Lightning's subprocess launcher writes into the environment of the job's first process
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


def pad_to_common_length(tokens: Tensor, mask: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad this process's batch to the longest padded length of any process's batch.

    Synced norms all-reduce on every call, recurrent cells call their norms once per time step, and
    per-step batch norm all-reduces ``[T, C]`` sums: every process must make the same calls with the same
    shapes, so all pad to one length, the one a single process holding the global batch pads to.
    """
    if not distributed_world():
        return tokens, mask
    length = torch.tensor([tokens.shape[1]], device=tokens.device)
    torch.distributed.all_reduce(length, op=torch.distributed.ReduceOp.MAX)
    return pad_to(tokens, mask, int(length.item()), pad_id)


def _relaunches_script(cfg: DictConfig) -> bool:
    """Whether Lightning will start this job's other processes by running the script again."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    strategy = str(cfg.get("strategy", "auto"))
    several = cfg.get("devices", 1) != 1 or cfg.get("num_nodes", 1) != 1
    external = SLURMEnvironment.detect() or TorchElasticEnvironment.detect() or "LOCAL_RANK" in os.environ
    relaunching = strategy.startswith("ddp") and not any(word in strategy for word in ("spawn", "fork", "notebook"))
    return relaunching and several and not external


@contextmanager
def ddp_job(cfg: DictConfig) -> Iterator[None]:
    """Around one Hydra job: in a multirun whose trainer relaunches the script (``strategy=ddp``), the
    children Lightning starts run this job alone, in this job's dir; the process is left as it was found."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or not _relaunches_script(cfg):
        yield
        return
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if not launcher.endswith("BasicLauncher"):
        raise ConfigError(
            f"trainer.strategy={cfg.strategy} starts its other processes by re-running train.py, which a job of "
            f"{launcher.rsplit('.', 1)[-1]} cannot do; use trainer.strategy=ddp_spawn with this launcher, "
            "or the default launcher (hydra/launcher=basic)"
        )
    argv, run_dir = list(sys.argv), hydra_cfg.run.dir
    saved_env = {key: os.environ.get(key) for key in LAUNCH_VARIABLES}
    threads = torch.get_num_threads()
    sys.argv = [argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        sys.argv = argv
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = run_dir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
