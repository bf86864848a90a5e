"""Measurements that show *why* batch statistics fail on sequences; the callbacks run them during training.

Each probe runs the model in "batch-statistics mode": train mode for the norms (statistics of the
batch at hand) but no dropout and no update of running statistics, so probing never changes the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from normbench.norms import batch_stat_norms

Forward = Callable[[Tensor, Tensor], Tensor]


@contextmanager
def batch_statistics_mode(model: nn.Module) -> Iterator[None]:
    """Norms use batch statistics (as in training) without updating running ones; dropout is off."""
    modes = {m: m.training for m in model.modules()}
    norms = [norm for _, norm in batch_stat_norms(model)]
    updates = [norm.update_running for norm in norms]
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    for norm in norms:
        norm.update_running = False
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)
        for norm, update in zip(norms, updates, strict=True):
            norm.update_running = update


def pad_to(tokens: Tensor, mask: Tensor, length: int, pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad a batch (``tokens[B, T]`` or numeric ``features[B, T, F]``) to ``length`` so batches of
    different content have the same shape."""
    extra = length - tokens.shape[1]
    if extra <= 0:
        return tokens, mask
    return (
        torch.cat([tokens, tokens.new_full((tokens.shape[0], extra, *tokens.shape[2:]), pad_id)], dim=1),
        torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], dim=1),
    )


@torch.no_grad()
def partner_dependence(
    forward: Forward, probe: tuple[Tensor, Tensor], partner_sets: list[tuple[Tensor, Tensor]], pad_id: int = 0
) -> float:
    """Mean over probe outputs of their standard deviation across batches with different batch mates.

    Every batch is the probe followed by one partner set, padded to one common length, so the probe
    rows are the same input each time: any change of their output comes from the batch mates.
    Exactly 0 for norms with per-token statistics.
    """
    length = max(t.shape[1] for t, _ in [probe, *partner_sets])
    probe_tokens, probe_mask = pad_to(*probe, length, pad_id)
    outputs = []
    for tokens, mask in partner_sets:
        tokens, mask = pad_to(tokens, mask, length, pad_id)
        out = forward(torch.cat([probe_tokens, tokens]), torch.cat([probe_mask, mask]))
        outputs.append(out[: probe_tokens.shape[0]].float())
    return float(torch.stack(outputs).std(dim=0, unbiased=False).mean())


@torch.no_grad()
def causal_leak(forward: Forward, tokens: Tensor, position: int, offset: int, vocab_size: int | None) -> float:
    """Largest change of the features at positions ``<= position`` when the token at ``position + offset``
    changes (numeric inputs, ``vocab_size=None``: every channel of that step moves by 1), in every sequence
    of an unpadded batch. Exactly 0 for a causal model with per-token norms; batch statistics over the time
    axis carry the future back into the past."""
    if tokens.shape[1] <= position + offset:
        raise ValueError(f"probe sequences have {tokens.shape[1]} tokens, need more than {position + offset}")
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    changed = tokens.clone()
    target = position + offset
    if vocab_size is None:
        changed[:, target] += 1.0
    else:
        changed[:, target] = changed[:, target] % (vocab_size - 2) + 2  # another real token (0, 1: pad, unk)
    before = forward(tokens, mask)[:, : position + 1]
    after = forward(changed, mask)[:, : position + 1]
    return float((after.float() - before.float()).abs().max())


def first_non_finite_module(model: nn.Module, run: Callable[[], object]) -> str | None:
    """Name and type of the first module (in execution order) whose output has a NaN or inf, or None."""
    found: list[str] = []

    def hook(name: str):
        def check(module: nn.Module, inputs, output) -> None:  # noqa: ANN001
            tensors = output if isinstance(output, tuple | list) else (output,)
            if not found and any(isinstance(t, Tensor) and not torch.isfinite(t).all() for t in tensors):
                found.append(f"{name} ({type(module).__name__})")

        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None
