"""2. Norm cost: forward + backward of each norm of ``normbench.norms`` on a padded ``[B, T, C]`` batch,
against the native PyTorch kernel for the same math, measured side by side; on CUDA also the bytes moved
per second against the device's memory bandwidth."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from normbench.bench.setup import compose_config
from normbench.bench.timing import calls_for, interleave, median, paired_ratio, seconds_per_call
from normbench.norm_factory import norm_factory
from normbench.norms import NORMS

#: ours / native, at most (issue 18: a masked batch norm needs the native kernel's passes; the per-step and
#: renormalizing ones a few elementwise ops more)
TARGETS = {
    "batch_masked": 1.0,
    "batch": 1.05,
    "layer": 1.02,
    "rms": 1.02,
    "batch_step": 2.0,
    "power": 1.5,
    "batch_renorm": 1.5,
}
#: norms whose statistics come from the real tokens only: their native equivalent runs on the packed tokens
PACKED = ("batch_masked", "batch_step", "power", "batch_renorm")
#: norms that gather the real tokens as batch_masked does, then do their own work: also timed against batch_masked,
#: which isolates that work from the gather and scatter (``vs batch_masked``)
ON_MASKED = ("power", "batch_renorm")
#: fused forward + backward moves x, y, dy, x, dx once each: the traffic the bandwidth figure assumes
PASSES = 5


class PackingOnly(nn.Module):
    """batch_masked's gather of the real tokens and scatter back into zeros around no norm at all: the share of
    batch_masked's cost that its native reference, handed the tokens already packed, never pays."""

    def __init__(self, masked: nn.Module) -> None:
        super().__init__()
        self.masked_rows = masked._masked_rows  # a method, not a submodule: no parameters to differentiate

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.masked_rows(x, mask, lambda rows: rows)


def norm_config(name: str, overrides: list[str]) -> dict[str, Any]:
    """The norm's options from ``conf/norm/<name>.yaml`` (its interpolations resolved against the root)."""
    cfg = compose_config([*overrides, f"norm={name}"])
    return OmegaConf.to_container(cfg.norm, resolve=True)


def native_norm(name: str, norm: nn.Module, channels: int) -> tuple[str, nn.Module]:
    """The PyTorch module that computes the same thing (or the closest thing) on plain rows."""
    eps = getattr(norm, "eps", 1e-5)
    if name == "layer":
        return "nn.LayerNorm", nn.LayerNorm(channels, eps=eps)
    if name in ("rms", "scale"):
        return "nn.RMSNorm", nn.RMSNorm(channels, eps=eps)
    if name == "group":
        return "nn.GroupNorm", nn.GroupNorm(norm.groups, channels, eps=eps)
    rows = "packed tokens" if name in PACKED else "all positions"
    return f"nn.BatchNorm1d ({rows})", nn.BatchNorm1d(channels, eps=eps)


def padded_batch(lengths: Tensor, channels: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Activations ``x[B, T, C]`` and the padding ``mask[B, T]`` for sequences of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    longest = int(lengths.max())
    mask = torch.arange(longest)[None, :] < lengths[:, None]
    x = torch.randn(len(lengths), longest, channels, generator=generator)
    return x.to(device), mask.to(device)


def fwd_bwd(module: nn.Module, x: Tensor, grad: Tensor, mask: Tensor | None) -> Callable[[], object]:
    """One forward + backward; gradients of the input and the parameters are returned, not accumulated."""
    params = [p for p in module.parameters() if p.requires_grad]
    x = x.detach().requires_grad_(True)

    def call() -> object:
        y = module(x, mask) if mask is not None else module(x)
        return torch.autograd.grad(y, [x, *params], grad)

    return call


def measure_norm(
    name: str,
    norm_cfg: dict[str, Any],
    lengths: Tensor,
    channels: int,
    device: torch.device,
    rounds: int,
    block: float,
    dtype: torch.dtype = torch.float32,
    bandwidth: bool = False,
    masked_cfg: dict[str, Any] | None = None,
    label: str | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """``dtype``: of the activations and of both modules (bf16 halves the bytes a memory-bound norm moves);
    ``bandwidth``: add the achieved GB/s (always on CUDA); ``masked_cfg``: time batch_masked (these options)
    alongside, for a ``vs batch_masked`` ratio; ``label``: the row's name (default ``name``); ``wrap``: time
    ``wrap(norm)`` instead of the norm."""
    x, mask = padded_batch(lengths, channels, device)
    x = x.to(dtype)
    grad = torch.randn_like(x)
    norm = norm_factory(norm_cfg)(channels).to(device, dtype).train()
    ours = wrap(norm) if wrap else norm
    native_label, native = native_norm(name, norm, channels)
    native = native.to(device, dtype).train()
    if name in PACKED:
        native_x, native_grad = x[mask], grad[mask]
    elif name == "scale" or native_label.startswith(("nn.LayerNorm", "nn.RMSNorm")):
        native_x, native_grad = x, grad
    else:  # BatchNorm1d / GroupNorm want rows [N, C]
        native_x, native_grad = x.reshape(-1, channels), grad.reshape(-1, channels)
    variants = {"ours": fwd_bwd(ours, x, grad, mask), "native": fwd_bwd(native, native_x, native_grad, None)}
    if masked_cfg is not None:
        masked = norm_factory(masked_cfg)(channels).to(device, dtype).train()
        variants["masked"] = fwd_bwd(masked, x, grad, mask)
    calls = {key: calls_for(call, device, block) for key, call in variants.items()}
    times = interleave(
        {
            key: (lambda call=call, key=key: seconds_per_call(call, calls[key], device))
            for key, call in variants.items()
        },
        rounds,
    )
    ratio = paired_ratio(times["ours"], times["native"])
    limit = None if label else TARGETS.get(name)  # the extra rows (a label of their own) are reported
    row = {
        "norm": label or name,
        "shape [B,T,C]": "x".join(str(s) for s in x.shape),
        "dtype": str(x.dtype).removeprefix("torch."),
        "padding %": 100.0 * (1.0 - float(mask.float().mean())),
        "ours us": 1e6 * median(times["ours"]),
        "native": native_label,
        "native us": 1e6 * median(times["native"]),
        "ratio": ratio,
        "vs batch_masked": paired_ratio(times["ours"], times["masked"]) if masked_cfg is not None else "-",
        "target": f"<= {limit}" if limit else "reported",
        "met": ("yes" if ratio <= limit else "no") if limit else "-",
    }
    if bandwidth or device.type == "cuda":
        moved = PASSES * x.numel() * x.element_size()
        row["GB/s"] = moved / median(times["ours"]) / 1e9
    return row


def norm_cost(
    names: list[str],
    lengths: Tensor,
    channels: int,
    overrides: list[str],
    device: torch.device,
    rounds: int,
    block: float,
    dtype: torch.dtype = torch.float32,
    bandwidth: bool = False,
) -> list[dict[str, Any]]:
    """One row per norm (``none`` has no cost and no native counterpart: left out); with batch_masked, also its
    gather and scatter alone; with batch_step, also the same batch without padding (the native kernel's case)."""
    measured = [name for name in names if name != "none" and name in NORMS]
    # each composed once: batch_masked is also the reference of ON_MASKED, batch_step also the unpadded row's
    configs = {name: norm_config(name, overrides) for name in dict.fromkeys([*measured, "batch_masked"])}
    if "batch_step" in configs:
        configs["batch_step"] = step_config(configs["batch_step"], lengths)
    common = (channels, device, rounds, block, dtype, bandwidth)
    rows = []
    for name in measured:
        versus = configs["batch_masked"] if name in ON_MASKED else None
        rows.append(measure_norm(name, configs[name], lengths, *common, masked_cfg=versus))
    if "batch_masked" in measured:
        label = "batch_masked: packing only"
        rows.append(
            measure_norm("batch_masked", configs["batch_masked"], lengths, *common, label=label, wrap=PackingOnly)
        )
    if "batch_step" in measured:
        full = torch.full_like(lengths, int(lengths.max()))
        label = "batch_step, no padding"
        rows.append(measure_norm("batch_step", configs["batch_step"], full, *common, label=label))
    return rows


def step_config(cfg: dict[str, Any], lengths: Tensor) -> dict[str, Any]:
    """batch_step's options with running statistics for every step of the batch, as after training at its length
    (the data's ``max_len`` may be shorter than the large case's T)."""
    return {**cfg, "max_steps": max(int(cfg["max_steps"]), int(lengths.max()))}


def add_bandwidth_share(rows: list[dict[str, Any]], peak_gbs: float) -> None:
    for row in rows:
        if "GB/s" in row:
            row["% of memory bandwidth"] = 100.0 * row["GB/s"] / peak_gbs
