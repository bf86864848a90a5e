"""Timing and memory measurement that holds up on a shared machine.

Variants that are compared run in the same process, interleaved round by round with the order reversed
every other round (A B, B A, A B, ...), so a change of machine load during the benchmark falls on every
variant alike; ratios are the median of the per-round ratios, times the median over rounds.
"""

from __future__ import annotations

import ctypes
import gc
import math
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = {"name": "wall", "fn": time.perf_counter}


def use_clock(name: str) -> None:
    """``cpu`` (process CPU time) or ``wall`` for every measurement after this call."""
    _clock.update(name=name, fn=CLOCKS[name])


def clock_name() -> str:
    return _clock["name"]


def now() -> float:
    return _clock["fn"]()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so wall-clock time covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(variants: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call every variant once per round, in reversed order every other round; each call returns its
    measurement (seconds per unit). Returns the measurements per variant, in round order."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(variants[name]())
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of ``numerator[i] / denominator[i]``: each ratio compares measurements taken
    moments apart, under the same load."""
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Mean seconds of ``calls`` back-to-back calls, with the device synchronised at both ends."""
    sync(device)
    start = now()
    for _ in range(calls):
        fn()
    sync(device)
    return (now() - start) / calls


def calls_for(fn: Callable[[], object], device: torch.device, block_seconds: float) -> int:
    """How many calls of ``fn`` fill about ``block_seconds`` (one warm-up call first)."""
    fn()
    once = seconds_per_call(fn, 1, device)
    return max(1, min(1000, int(block_seconds / max(once, 1e-7))))


def step_seconds(stamps: Sequence[float], warmup: int, device: torch.device) -> float:
    """Seconds per training step from the end-of-step timestamps of one run, skipping ``warmup`` steps.

    CPU: the median of the step-to-step intervals (robust to another process's burst of load).
    CUDA: the mean over the measured steps, since the host runs ahead of the device and single
    intervals mean little; the clock synchronises the device at both ends of that span.
    """
    measured = list(stamps[warmup:])
    if len(measured) < 2:
        raise ValueError(f"need at least {warmup + 2} steps to time, got {len(stamps)}")
    if device.type == "cuda":
        return (measured[-1] - measured[0]) / (len(measured) - 1)
    return median([b - a for a, b in zip(measured, measured[1:], strict=False)])


def finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --- peak memory ------------------------------------------------------------------------------------

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so the resident
    size before a measurement is the live memory, not what an earlier measurement left in the heap."""
    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident size of this process to the current one (Linux >= 4.0)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory of a block above what was in use when it started, in MiB (``.mib``).

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only). CPU: the peak resident set size of the
    process (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), which counts every
    allocation torch makes; where that reset is not allowed, the growth of ``ru_maxrss`` (a lower
    bound: it only moves once the process exceeds its earlier peak). ``method`` says which.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = float("nan")
        self.method = ""

    @contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        _release_free_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield self
            self.mib = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
            self.method = "cuda max_memory_allocated"
            return
        if _reset_peak_rss():
            base = _status_kib("VmRSS") or 0
            yield self
            self.mib = ((_status_kib("VmHWM") or 0) - base) / 1024
            self.method = "peak RSS (VmHWM reset)"
            return
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield self
        self.mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        self.method = "ru_maxrss growth (lower bound)"
