"""What each instrument logs, declared once (torch-free): the run keeps these keys in results.json, the
report summarizes the headline ones, and an instrument that logs a key its declaration lacks stops at once.

Adding an instrument: its callback class in ``callbacks.py`` (``declared = <its Declared>``), its
declaration here, and its ``conf/callbacks/<config>.yaml``; an entry lists it in its ``callbacks`` defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

#: the train/eval gap in accuracy points, the causal-leak probe and the batch-variance fluctuation: the figures'
#: own metrics
TRAIN_EVAL_GAP_KEY = "val/train_eval_gap"
CAUSAL_LEAK_KEY = "probe/causal_leak"
#: the validation loss with the batch's statistics: beside ``val/loss``, what using them costs
BATCH_STATS_LOSS_KEY = "val/loss_batch_stats"
FLUCTUATION_KEY = "stats/scale_shift"


@dataclass(frozen=True)
class Declared:
    """One instrument: its config (``conf/callbacks/<config>.yaml``, the key under ``callbacks``), the keys
    the report summarizes beside the metrics (``headline``) and the other keys it logs (``logs``: exact keys
    or ``fnmatch`` patterns such as ``stats/*/mean_dist`` for one key per layer)."""

    config: str
    headline: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()
    #: its headline keys are samples of training batches, logged every few steps: the report's value of a run
    #: is the mean of the samples over the second half of training (``late_mean``), not the last one (a batch)
    sampled: bool = False

    def declares(self, key: str) -> bool:
        return key in self.headline or any(fnmatchcase(key, pattern) for pattern in self.logs)


TRAIN_EVAL_GAP = Declared(
    "train_eval_gap",
    headline=(TRAIN_EVAL_GAP_KEY, "val/bpc_train_eval_gap"),
    logs=("val/acc_batch_stats", BATCH_STATS_LOSS_KEY, "val/bp[ct]_batch_stats", "val/bpt_train_eval_gap"),
)
PARTNER_DEPENDENCE = Declared("partner_dependence", headline=("probe/partner_dependence",))
CAUSAL_LEAK = Declared("causal_leak", headline=(CAUSAL_LEAK_KEY,))
BATCH_STAT_FLUCTUATION = Declared(
    "batch_stat_fluctuation",
    headline=("stats/mean_shift", FLUCTUATION_KEY, "stats/mean_dist", "stats/var_dist"),
    logs=("stats/*/mean_shift", "stats/*/scale_shift", "stats/*/mean_dist", "stats/*/var_dist"),
    sampled=True,
)
GRAD_NORMS = Declared("grad_norms", headline=("grad_norm/max_total",), logs=("grad_norm/total", "grad_norm/*"))
CONVERGENCE = Declared(
    "convergence", logs=("convergence/val_acc", "convergence/reached_target", "convergence/steps_to_target")
)
NAN_GUARD = Declared("nan_guard")

#: every instrument, in the order the report's columns take
INSTRUMENTS = (
    TRAIN_EVAL_GAP,
    PARTNER_DEPENDENCE,
    CAUSAL_LEAK,
    BATCH_STAT_FLUCTUATION,
    GRAD_NORMS,
    CONVERGENCE,
    NAN_GUARD,
)
#: the instruments' keys summarized beside the metrics (per-layer values stay in results.csv)
HEADLINE = tuple(key for instrument in INSTRUMENTS for key in instrument.headline)
#: the headline keys whose run value is the late mean of their samples
SAMPLED = tuple(key for instrument in INSTRUMENTS if instrument.sampled for key in instrument.headline)


def late_mean(points: list[tuple[float, float]]) -> float:
    """The mean of a series' values from the middle of its steps on (its samples of the trained model; the
    first half is mostly the statistics settling from their initial values)."""
    middle = (points[0][0] + points[-1][0]) / 2
    late = [value for step, value in points if step >= middle]
    return sum(late) / len(late)


def declared(key: str) -> bool:
    """Whether some instrument logs ``key`` (what results.json keeps of the instruments' last values)."""
    return any(instrument.declares(key) for instrument in INSTRUMENTS)
