"""The Trainer's set-up before it starts: GPUs checked with one line, ``precision: auto`` resolved."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from normbench.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")


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
