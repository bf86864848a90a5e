"""The processes of a job: which one writes, and sums over all of them (what synced batch statistics need)."""

from __future__ import annotations

import atexit
import functools

import torch.distributed as dist
from torch import Tensor


def is_global_zero() -> bool:
    """True in the one process of a job that writes results.json and prints the summary (Lightning's
    rank: from RANK / LOCAL_RANK / SLURM_PROCID before the Trainer starts, the strategy's global rank after)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def distributed_world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over processes, differentiable (the gradient is the sum of every process's gradient, as in
    ``nn.SyncBatchNorm``); the identity outside a multi-process run."""
    if not distributed_world():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor)


def destroy_process_group_at_exit() -> None:
    """Destroy this process's group when the interpreter exits, while Python is still whole. A gloo group left to
    the interpreter's finalization can abort the process ('terminate called without an active exception',
    SIGABRT; pytorch/pytorch#179291): ddp_spawn workers died so after their work was done, failing the job."""
    if dist.is_available() and dist.is_initialized():
        _register_exit_hook()


@functools.cache
def _register_exit_hook() -> None:
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
