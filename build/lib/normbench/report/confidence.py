"""Means with 95% confidence intervals over seeds (Student t), of differences between two norms, and the
minimum detectable effect of a difference (what a null result can rule out).

A difference is paired when both norms ran the same seeds (the training order and the data split are
functions of the seed alone, so seed i of one norm saw what seed i of the other saw); otherwise Welch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
#: the power at which `minimum_detectable_effect` is stated
POWER = 0.80


@dataclass(frozen=True)
class Estimate:
    """A mean and the half-width of its confidence interval (NaN when n < 2: no spread to speak of)."""

    mean: float
    ci: float
    n: int
    method: str = "t"
    #: degrees of freedom of the t interval (NaN without one)
    df: float = math.nan

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.ci)

    @property
    def no_spread(self) -> bool:
        """A CI of width 0 up to rounding: every seed gave the same value (or difference)."""
        return self.has_ci and self.ci <= 1e-9 * max(1.0, abs(self.mean))

    @property
    def excludes_zero(self) -> bool:
        """Whether the CI lies on one side of 0 (a difference "clear of zero")."""
        return self.has_ci and (abs(self.mean) > self.ci or (self.no_spread and abs(self.mean) > 1e-12))

    @property
    def standard_error(self) -> float:
        return self.ci / _t_quantile(self.df) if self.has_ci and math.isfinite(self.df) else math.nan


def _t_quantile(df: float) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def mean_ci(values: Sequence[float]) -> Estimate:
    """Mean +/- t_{0.975, n-1} * s / sqrt(n) of the finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan, 0)
    if x.size == 1:
        return Estimate(float(x[0]), math.nan, 1)
    df = x.size - 1
    return Estimate(float(x.mean()), _t_quantile(df) * float(x.std(ddof=1)) / math.sqrt(x.size), x.size, df=df)


def difference_ci(a: Mapping[object, float], b: Mapping[object, float]) -> Estimate:
    """Mean of ``a - b`` with its CI; ``a`` and ``b`` map seed -> value. Paired over the seeds when both
    have the same seeds (method ``paired``), else Welch's unequal-variance interval (method ``welch``)."""
    a = {k: v for k, v in a.items() if math.isfinite(v)}
    b = {k: v for k, v in b.items() if math.isfinite(v)}
    if a and set(a) == set(b):
        paired = mean_ci([a[k] - b[k] for k in a])
        return Estimate(paired.mean, paired.ci, paired.n, "paired", paired.df)
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
    return Estimate(mean, _t_quantile(df) * se, n, "welch", df)


def power(effect: float, standard_error: float, df: float) -> float:
    """Probability that the two-sided t test at `LEVEL` rejects 0 when the true difference is ``effect``:
    the noncentral t distribution with noncentrality ``effect / standard_error``."""
    crit = _t_quantile(df)
    nc = effect / standard_error
    upper, lower = float(stats.nct.sf(crit, df, nc)), float(stats.nct.cdf(-crit, df, nc))
    return upper + (lower if math.isfinite(lower) else 0.0)  # scipy's far tail can be NaN where it is ~0


def minimum_detectable_effect(est: Estimate, target: float = POWER) -> float:
    """The smallest true difference the same design (its standard error and degrees of freedom) detects
    with probability ``target``: a null result means "smaller than this". NaN without a CI; 0 when the
    difference had no spread at all."""
    if est.no_spread:
        return 0.0
    se = est.standard_error
    if not math.isfinite(se):
        return math.nan
    upper = se * (_t_quantile(est.df) + float(stats.t.ppf(target, est.df)) + 1.0)
    while power(upper, se, est.df) < target:
        upper *= 2
    return float(optimize.brentq(lambda d: power(d, se, est.df) - target, 0.0, upper, xtol=se * 1e-9))
