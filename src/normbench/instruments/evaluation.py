"""Test-set evaluations beyond the training conditions: longer sequences and other batch sizes.

Batch norm is trained on batches of one size and sequences up to one length; these are the two places
where its inference breaks: per-step statistics have nothing past the trained length (length
extrapolation), and a model that still uses batch statistics at inference gets statistics of one
sequence when it is served one at a time (inference at batch size one). Layer-statistic norms do not care.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from normbench.errors import BatchStatisticsError, ConfigError
from normbench.instruments.probes import batch_statistics_mode


def _checked_sizes(name: str, values: Sequence[Any]) -> list[int]:
    sizes = list(values or [])
    for value in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"evaluate.{name} holds {value!r}; accepted: a list of integers >= 1")
    return sizes


def extra_evaluations(
    module: Any, datamodule: Any, lengths: Sequence[int] = (), batch_sizes: Sequence[int] = ()
) -> tuple[dict[str, float], list[str]]:
    """Test metrics at each max length in ``lengths`` (``test/<metric>@len=L``, running statistics) and at
    each batch size in ``batch_sizes``, with running statistics (``test/<metric>@eval_batch=B``) and with
    batch statistics (``test/<metric>_batch_stats@eval_batch=B``). Returns the metrics and notes on the
    evaluations that cannot be made (batch statistics of a batch too small for them)."""
    lengths, batch_sizes = _checked_sizes("lengths", lengths), _checked_sizes("batch_sizes", batch_sizes)
    if (lengths or batch_sizes) and not hasattr(datamodule, "evaluation_loader"):
        raise ConfigError(
            f"evaluate.lengths / evaluate.batch_sizes need a datamodule with evaluation_loader(); "
            f"{type(datamodule).__name__} has none: leave them empty"
        )
    metrics: dict[str, float] = {}
    notes: list[str] = []
    was_training = module.training
    module.eval()
    try:
        for length in lengths:
            result = module.evaluate(datamodule.evaluation_loader("test", max_len=length))
            metrics.update({f"test/{k}@len={length}": v for k, v in result.items()})
        for size in batch_sizes:
            loader = datamodule.evaluation_loader("test", batch_size=size)
            metrics.update({f"test/{k}@eval_batch={size}": v for k, v in module.evaluate(loader).items()})
            try:
                with batch_statistics_mode(module):
                    result = module.evaluate(loader)
            except BatchStatisticsError as err:
                notes.append(f"batch statistics at eval batch {size}: {err}")
                continue
            metrics.update({f"test/{k}_batch_stats@eval_batch={size}": v for k, v in result.items()})
    finally:
        module.train(was_training)
    return metrics, notes
