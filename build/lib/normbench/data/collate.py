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


def pad_feature_collate(batch: Sequence[tuple[Tensor, int]], pad_to: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``[(features[T, F], label), ...]`` -> ``(features[B, T, F] float, mask[B, T] bool, target[B] long)``.

    Numeric sequences are right-padded with zeros exactly as token sequences are padded with ``pad_id``
    (to the longest in the batch, or to ``pad_to``); ``mask`` is True on real steps.
    """
    if len(batch) == 0:
        raise ValueError("pad_feature_collate got an empty batch")
    lengths = torch.tensor([len(x) for x, _ in batch], dtype=torch.long)
    longest = max(int(lengths.max()), pad_to)
    features = torch.zeros(len(batch), longest, batch[0][0].shape[-1], dtype=torch.float32)
    for i, (x, _) in enumerate(batch):
        features[i, : len(x)] = x
    mask = torch.arange(longest).unsqueeze(0) < lengths.unsqueeze(1)
    target = torch.tensor([int(label) for _, label in batch], dtype=torch.long)
    return features, mask, target


#: target value of positions that have no next token (padding): skipped by the loss and every metric
IGNORE_INDEX = -100


def pad_lm_collate(batch: Sequence[tuple[Tensor, Tensor]], pad_id: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``[(input_ids, next_ids), ...]`` -> ``(tokens[B, T], mask[B, T], target[B, T])`` for language modeling.

    Inputs are right-padded with ``pad_id`` and targets with ``IGNORE_INDEX``, so padded positions are
    neither attended to (mask) nor scored (target).
    """
    if len(batch) == 0:
        raise ValueError("pad_lm_collate got an empty batch")
    tokens, mask, _ = pad_collate([(ids, 0) for ids, _ in batch], pad_id)
    target = torch.full_like(tokens, IGNORE_INDEX)
    for i, (ids, next_ids) in enumerate(batch):
        if len(next_ids) != len(ids):
            raise ValueError(f"pad_lm_collate: example {i} has {len(ids)} inputs but {len(next_ids)} targets")
        target[i, : len(next_ids)] = torch.as_tensor(next_ids, dtype=torch.long)
    return tokens, mask, target
