"""Measurements that show *why* batch statistics fail on sequences; the callbacks run them during training.

Each probe runs the model in "batch-statistics mode": train mode for the norms (statistics of the
batch at hand) but no dropout and no update of running statistics, so probing never changes the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from copy import deepcopy

import torch
from torch import Tensor, nn

from normbench.custom_norm import CustomNorm
from normbench.norms import batch_stat_norms, set_training_step

Forward = Callable[[Tensor, Tensor], Tensor]


@contextmanager
def batch_statistics_mode(model: nn.Module, update_running: bool = False) -> Iterator[None]:
    """Norms use batch statistics (as in training) without updating running ones; dropout is off.

    A user's norm (``norm=custom``) has no ``update_running`` switch: its buffers are put back as they
    were instead. ``update_running=True`` lets the running statistics move (a statistics warm-up).
    """
    modes = {m: m.training for m in model.modules()}
    norms = [norm for _, norm in batch_stat_norms(model)]
    updates = [norm.update_running for norm in norms]
    custom = [b for m in model.modules() if isinstance(m, CustomNorm) for b in m.buffers()]
    saved = [] if update_running else [b.clone() for b in custom]
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    for norm in norms:
        norm.update_running = update_running
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)
        for norm, update in zip(norms, updates, strict=True):
            norm.update_running = update
        if not update_running:
            with torch.no_grad():
                for buffer, value in zip(custom, saved, strict=True):
                    buffer.copy_(value)


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


def _real_gap(before: Tensor, after: Tensor, mask: Tensor) -> float:
    """Largest absolute difference of two outputs at the real tokens (inf when either is not finite)."""
    before, after = before[mask].float(), after[mask].float()
    if not (torch.isfinite(before).all() and torch.isfinite(after).all()):
        return math.inf
    return float((after - before).abs().max()) if before.numel() else 0.0


@torch.no_grad()
def padding_dependence(forward: Forward, tokens: Tensor, mask: Tensor, extra: int, pad_id: int = 0) -> float:
    """Largest change of the outputs at real tokens when ``extra`` more padding positions are appended to
    every sequence: 0 for norms whose statistics leave padding out (and for per-token norms)."""
    longer = pad_to(tokens, mask, tokens.shape[1] + extra, pad_id)
    return _real_gap(forward(tokens, mask), forward(*longer)[:, : tokens.shape[1]], mask)


@torch.no_grad()
def batch_one_gap(forward: Forward, tokens: Tensor, mask: Tensor, count: int) -> float:
    """Largest change of the outputs at real tokens of the first ``count`` sequences when each is run
    alone (unpadded, batch size one) instead of inside ``tokens``' batch."""
    together = forward(tokens, mask)
    gap = 0.0
    for row in range(min(count, tokens.shape[0])):
        length = int(mask[row].sum())
        alone = forward(tokens[row : row + 1, :length], mask[row : row + 1, :length])
        gap = max(gap, _real_gap(together[row : row + 1, :length], alone, mask[row : row + 1, :length]))
    return gap


@torch.no_grad()
def warm_up_statistics(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """Collect running statistics as the first training steps would (train-mode norms, running statistics
    updated, each batch's step number given to the norms with a schedule), with no dropout and no
    gradient step."""
    with batch_statistics_mode(model, update_running=True):
        for step, (tokens, mask) in enumerate(batches):
            set_training_step(model, step)
            model(tokens, mask)


@torch.no_grad()
def mode_gap(model: nn.Module, tokens: Tensor, mask: Tensor) -> float:
    """Largest difference at real tokens between the outputs with batch statistics (train-mode norms)
    and with running statistics (eval mode); 0 for norms that keep no statistics."""
    with batch_statistics_mode(model):
        train_out = model(tokens, mask)
    was_training = model.training
    model.eval()
    try:
        eval_out = model(tokens, mask)
    finally:
        model.train(was_training)
    return _real_gap(train_out, eval_out, mask)


def cut(batches: Iterable[tuple[Tensor, Tensor]], length: int) -> list[tuple[Tensor, Tensor]]:
    """The batches with every sequence cut at ``length`` tokens."""
    return [(tokens[:, :length], mask[:, :length]) for tokens, mask in batches]


@torch.no_grad()
def length_dependence(
    model: nn.Module, warm_batches: list[tuple[Tensor, Tensor]], tokens: Tensor, mask: Tensor, length: int
) -> float:
    """Largest difference of the eval-mode outputs at positions ``>= length`` between a copy of the model
    whose statistics were collected on ``warm_batches`` cut at ``length`` and one whose statistics saw
    them whole: what normalizing past the longest length seen in the statistics changes (0 without
    statistics; per-step norms reuse their last step's there, or refuse)."""
    outputs = []
    for batches in (warm_batches, cut(warm_batches, length)):
        copy = deepcopy(model)
        warm_up_statistics(copy, batches)
        outputs.append(copy.eval()(tokens, mask)[:, length:])
    past = mask[:, length:]
    return _real_gap(outputs[0], outputs[1], past) if past.any() else 0.0
