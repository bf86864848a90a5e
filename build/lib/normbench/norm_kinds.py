"""The built-in norms by their ``norm=`` name, in the report's order, and what statistics each uses.

Torch-free, so the report can name, order and colour norms without importing the model code; a test
holds it equal to the classes' own ``uses_batch_stats`` (normbench.norms.NORMS).
"""

from __future__ import annotations

from typing import Any

BATCH, TOKEN, NONE, OTHER = "batch", "token", "none", "other"

#: ``norm=<name>`` -> kind: ``batch`` (statistics over the batch), ``token`` (over each token's channels), ``none``
BUILT_IN: dict[str, str] = {
    "none": NONE,
    "batch": BATCH,
    "batch_masked": BATCH,
    "batch_step": BATCH,
    "power": BATCH,
    "batch_renorm": BATCH,
    "layer": TOKEN,
    "rms": TOKEN,
    "group": TOKEN,
    "scale": TOKEN,
}


def norm_kind(norm: str, record: dict[str, Any] | None = None) -> str:
    """A run's kind: what its results.json says (``norm_kind``, written by the run from its built network),
    else (records written before it) the built-in's."""
    recorded = (record or {}).get("norm_kind")
    return recorded if recorded in (BATCH, TOKEN, NONE) else BUILT_IN.get(norm, OTHER)


def norm_order(norm: str) -> tuple[int, str]:
    names = list(BUILT_IN)
    return (names.index(norm) if norm in names else len(names), norm)
