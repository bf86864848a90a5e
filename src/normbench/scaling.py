"""Running one job on more than one process or a GPU: checks before the Trainer starts, the precision
``auto`` resolves to, which process writes the job's files, and DDP inside a Hydra multirun.

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
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, read_write
from torch import Tensor

from normbench.errors import ConfigError
from normbench.norms import distributed_world
from normbench.probes import pad_to

GPU_ACCELERATORS = ("gpu", "cuda")
#: what Lightning's subprocess launcher writes into the environment of the job's first process
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


def is_global_zero() -> bool:
    """True in the one process of a job that writes results.json and prints the summary (Lightning's
    rank: from RANK / LOCAL_RANK / SLURM_PROCID before the Trainer starts, the strategy's global rank after)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _trainer_choice() -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "?"
    return HydraConfig.get().runtime.choices.get("trainer") or "?"


def _check_gpus(accelerator: str, devices: Any) -> None:
    """A GPU config on a machine (or a torch build) without CUDA fails here with one line, not in Lightning."""
    if accelerator not in GPU_ACCELERATORS:
        return
    choice = _trainer_choice()
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        hint = "use trainer=cpu" + (", or trainer.accelerator=cpu for CPU processes" if choice == "ddp" else "")
        raise ConfigError(
            f"trainer={choice} asks for a GPU (trainer.accelerator={accelerator}) but torch sees none "
            f"(torch {torch.__version__}, {build}); {hint}"
        )
    available = torch.cuda.device_count()
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > available:
        raise ConfigError(
            f"trainer.devices={devices} asks for {devices} GPUs but torch sees {available}; "
            f"accepted: 1..{available}, or -1 for all"
        )


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """``precision: auto`` = bf16-mixed on a GPU that has bf16 (Ampere and later), 16-mixed on an older
    GPU, 32-true on CPU; any other value is Lightning's and passes through unchanged."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and torch.cuda.is_available())
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def trainer_config(cfg: DictConfig) -> DictConfig:
    """The ``trainer`` config ready for ``instantiate``: GPUs checked, ``precision: auto`` resolved."""
    accelerator = str(cfg.get("accelerator", "auto"))
    _check_gpus(accelerator, cfg.get("devices", 1))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if "precision" in resolved:
        resolved["precision"] = resolve_precision(resolved["precision"], accelerator)
    return OmegaConf.create(resolved)


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


def compile_encoder(encoder: torch.nn.Module, option: bool | str | None) -> None:
    """``model.compile``: false (eager), true (``torch.compile``'s default backend, inductor), or a backend
    name (``aot_eager`` traces and runs autograd ahead of time without generating kernels: minutes cheaper
    to start on a CPU). Compiles in place, so parameter names, and so checkpoints, stay the eager model's."""
    if option is None or option is False:
        return
    backend = "inductor" if option is True else str(option)
    if backend not in torch.compiler.list_backends(exclude_tags=()):
        usual = [*torch.compiler.list_backends(), "aot_eager", "eager"]
        raise ConfigError(
            f"model.compile={option!r} is not a torch.compile backend; accepted: false, true (= inductor), "
            f"{', '.join(usual)} (torch.compiler.list_backends(exclude_tags=()) lists all)"
        )
    encoder.compile(backend=backend)


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
