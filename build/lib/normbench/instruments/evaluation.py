"""Test-set evaluations beyond the training conditions: longer sequences, other batch sizes, other padding.

Batch norm is trained on batches of one size, sequences up to one length and one amount of padding; these
are the places where its inference breaks: per-step statistics have nothing past the trained length (length
extrapolation), a model that still uses batch statistics at inference gets statistics of one sequence when
it is served one at a time (inference at batch size one), and naive batch statistics count the pads, so
they move when a server pads differently from training (padding). Layer-statistic norms do not care.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from normbench.errors import BatchStatisticsError, ConfigError
from normbench.instruments.probes import batch_statistics_mode


def _checked_sizes(name: str, values: Sequence[Any], minimum: int = 1) -> list[int]:
    sizes = list(values or [])
    for value in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"evaluate.{name} holds {value!r}; accepted: a list of integers >= {minimum}")
    return sizes


def _measured(module: Any, loader: Any) -> dict[str, float]:
    """``module.evaluate``'s accuracy and loss, and a language model's loss in bits too (bpc or bpt)."""
    result = module.evaluate(loader)
    bits = getattr(module, "bits_name", None)
    return result | ({bits: result["loss"] / math.log(2)} if bits else {})


def extra_evaluations(
    module: Any,
    datamodule: Any,
    lengths: Sequence[int] = (),
    batch_sizes: Sequence[int] = (),
    pad_to: Sequence[int] = (),
) -> tuple[dict[str, float], list[str]]:
    """Test metrics at each max length in ``lengths`` (``test/<metric>@len=L``, running statistics; a language
    model's windows that long), at each batch size in ``batch_sizes`` and at each padded length in ``pad_to``
    (0: the longest of the batch), each with running statistics (``test/<metric>@eval_batch=B``,
    ``@pad_to=P``) and with batch statistics (``test/<metric>_batch_stats@eval_batch=B``, ``@pad_to=P``).
    Returns the metrics and notes on the evaluations a norm refuses (batch statistics of a batch too small for
    them, per-step statistics past ``norm.max_steps`` under ``norm.beyond=error``): those metrics are absent."""
    lengths, batch_sizes = _checked_sizes("lengths", lengths), _checked_sizes("batch_sizes", batch_sizes)
    pad_to = _checked_sizes("pad_to", pad_to, minimum=0)
    if (lengths or batch_sizes or pad_to) and not hasattr(datamodule, "evaluation_loader"):
        raise ConfigError(
            f"evaluate.lengths / evaluate.batch_sizes / evaluate.pad_to need a datamodule with evaluation_loader(); "
            f"{type(datamodule).__name__} has none: leave them empty"
        )
    metrics: dict[str, float] = {}
    notes: list[str] = []

    def both_modes(loader: Any, at: str, what: str) -> None:
        metrics.update({f"test/{k}@{at}": v for k, v in _measured(module, loader).items()})
        try:
            with batch_statistics_mode(module):
                result = _measured(module, loader)
        except BatchStatisticsError as err:
            notes.append(f"batch statistics at {what}: {err}")
            return
        metrics.update({f"test/{k}_batch_stats@{at}": v for k, v in result.items()})

    was_training = module.training
    module.eval()
    try:
        for length in lengths:
            try:
                result = _measured(module, datamodule.evaluation_loader("test", max_len=length))
            except BatchStatisticsError as err:
                notes.append(f"running statistics at length {length}: {err}")
                continue
            metrics.update({f"test/{k}@len={length}": v for k, v in result.items()})
        for size in batch_sizes:
            loader = datamodule.evaluation_loader("test", batch_size=size)
            both_modes(loader, f"eval_batch={size}", f"eval batch {size}")
        for length in pad_to:
            both_modes(datamodule.evaluation_loader("test", pad_to=length), f"pad_to={length}", f"pad to {length}")
    finally:
        module.train(was_training)
    return metrics, notes
