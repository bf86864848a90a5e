"""Batching: right-pad variable-length token sequences and say which positions are real.

The mask is what lets masked batch norm (and attention) ignore padding; naive batch norm is
measured exactly by *not* using it, so padding must be a fixed, known value (``pad_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad_collate(
    batch: Sequence[tuple[list[int] | Tensor, int]], pad_id: int = 0, pad_to: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """``[(ids, label), ...]`` -> ``(tokens[B, T] long, mask[B, T] bool, target[B] long)``.

    Sequences are right-padded with ``pad_id`` to the longest in the batch, or to ``pad_to`` when that
    is longer (the padding experiment raises the padding share without touching the real tokens);
    ``mask`` is True on real tokens.
    """
    if len(batch) == 0:
        raise ValueError("pad_collate got an empty batch")
    seqs = [torch.as_tensor(ids, dtype=torch.long).reshape(-1) for ids, _ in batch]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    longest = max(int(lengths.max()), pad_to)
    tokens = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    for i, seq in enumerate(seqs):
        tokens[i, : len(seq)] = seq
    mask = torch.arange(longest).unsqueeze(0) < lengths.unsqueeze(1)
    target = torch.tensor([int(label) for _, label in batch], dtype=torch.long)
    return tokens, mask, target
