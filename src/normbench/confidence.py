"""Means with 95% confidence intervals over seeds (Student t), and of differences between two norms.

A difference is paired when both norms ran the same seeds (the training order and the data split are
functions of the seed alone, so seed i of one norm saw what seed i of the other saw); otherwise Welch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean and the half-width of its confidence interval (NaN when n < 2: no spread to speak of)."""

    mean: float
    ci: float
    n: int
    method: str = "t"

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.ci)


def _t_quantile(df: float) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def mean_ci(values: Sequence[float]) -> Estimate:
    """Mean +/- t_{0.975, n-1} * s / sqrt(n) of the finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan, 0)
    if x.size == 1:
        return Estimate(float(x[0]), math.nan, 1)
    return Estimate(float(x.mean()), _t_quantile(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size), x.size)


def difference_ci(a: Mapping[object, float], b: Mapping[object, float]) -> Estimate:
    """Mean of ``a - b`` with its CI; ``a`` and ``b`` map seed -> value. Paired over the seeds when both
    have the same seeds (method ``paired``), else Welch's unequal-variance interval (method ``welch``)."""
    a = {k: v for k, v in a.items() if math.isfinite(v)}
    b = {k: v for k, v in b.items() if math.isfinite(v)}
    if a and set(a) == set(b):
        paired = mean_ci([a[k] - b[k] for k in a])
        return Estimate(paired.mean, paired.ci, paired.n, "paired")
    xa, xb = np.asarray(list(a.values())), np.asarray(list(b.values()))
    if xa.size == 0 or xb.size == 0:
        return Estimate(math.nan, math.nan, 0, "welch")
    mean = float(xa.mean() - xb.mean())
    n = min(xa.size, xb.size)
    if n < 2:
        return Estimate(mean, math.nan, n, "welch")
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Estimate(mean, 0.0, n, "welch")
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    return Estimate(mean, _t_quantile(df) * se, n, "welch")
