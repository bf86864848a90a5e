"""What a GPU can do at most, for the bandwidth and MFU figures: memory bandwidth and dense bf16 FLOP/s."""

from __future__ import annotations

import time

import torch

from normbench.bench.timing import sync

#: dense bf16 tensor-core peak (no sparsity), FLOP/s, from the vendors' data sheets; matched by name
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


def peak_bf16_flops(device: torch.device) -> tuple[float, str]:
    """The data-sheet peak for this device, and the name it was matched by (``nan`` when unknown)."""
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():  # most specific first
        if key in name:
            return flops, key
    return float("nan"), f"unknown ({name})"


def memory_bandwidth(device: torch.device) -> tuple[float, str]:
    """Bytes/s the memory can move: from the device's memory clock and bus width (double data rate) when
    torch reports them, else measured as a large device-to-device copy (read + write). On a CPU (the dry run
    of scripts/gpu_check.sh) a host memory copy, so the column exists everywhere; it is no data-sheet peak."""
    if device.type != "cuda":
        return copy_bandwidth(device, 2**24), "measured: host memory copy"
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8, "spec: 2 x memory clock x bus width"
    return copy_bandwidth(device, 2**28), "measured: device-to-device copy"


def copy_bandwidth(device: torch.device, numel: int, repeats: int = 10) -> float:
    """Bytes/s of copying ``numel`` float32 values (read + write), best of ``repeats`` copies after a warm-up."""
    src = torch.empty(numel, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best
