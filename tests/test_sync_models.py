"""`norm.sync=true` through whole models under DDP: two CPU processes (gloo), each holding sequences of its
own padded length, compute what one process computes on the whole batch.

Each process pads its batch to its own longest sequence (as the collate does), but an LSTM calls its norms
once per time step and per-step batch norm all-reduces per-position sums: the processes only make the
same collective calls if they agree on one length. The classifier pads to the longest over processes."""

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from normbench.norm_factory import norm_factory

WORLD = 2
VOCAB = 30
LENGTHS = [9, 3, 6, 2, 4, 7]  # rank 0 takes sequences 0, 2, 4 (longest 9), rank 1 takes 1, 3, 5 (longest 7)
MODELS = ["lstm/batch_masked", "transformer/batch_step", "transformer/batch"]


def _classifier(name: str, sync: bool):
    from normbench.models.rnn import RecurrentEncoder
    from normbench.models.transformer import TransformerEncoder
    from normbench.run.task import SequenceClassifier

    model, norm = name.split("/")
    torch.manual_seed(0)
    if model == "lstm":
        encoder = RecurrentEncoder(VOCAB, norm_factory(norm, sync=sync), cell="lstm", embed_dim=8, hidden_size=8)
    else:
        encoder = TransformerEncoder(VOCAB, norm_factory(norm, sync=sync), d_model=8, n_heads=2, n_layers=1, d_ff=16)
    for module in encoder.modules():  # no dropout: the processes' masks would differ
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return SequenceClassifier(encoder, 2).train()


def _batch():
    gen = torch.Generator().manual_seed(7)
    mask = torch.arange(max(LENGTHS))[None, :] < torch.tensor(LENGTHS)[:, None]
    tokens = torch.randint(2, VOCAB, mask.shape, generator=gen).masked_fill(~mask, 0)
    return tokens, mask, torch.randn(len(LENGTHS), 2, generator=gen)


def _run(name: str, sync: bool, rows: list[int]) -> dict:
    """One training step on the given sequences, padded to their own longest (as the collate pads)."""
    tokens, mask, grad_out = _batch()
    local = int(mask[rows].sum(1).max())
    model = _classifier(name, sync)
    logits = model(tokens[rows, :local], mask[rows, :local])
    (logits * grad_out[rows]).sum().backward()
    return {
        "logits": logits.detach(),
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        "buffers": {n: b.clone() for n, b in model.named_buffers() if "running" in n},
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        rows = list(range(rank, len(LENGTHS), WORLD))
        torch.save({name: _run(name, True, rows) for name in MODELS}, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # every rank done before the store goes: a rank still in a collective aborts (SIGABRT)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp_models")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_synced_models_with_different_lengths_per_process_equal_one_process(name: str, synced) -> None:
    whole = _run(name, False, list(range(len(LENGTHS))))
    tol = dict(atol=1e-5, rtol=1e-4)
    for rank, results in enumerate(synced):
        got = results[name]
        torch.testing.assert_close(got["logits"], whole["logits"][rank::WORLD], **tol)
        for key, value in whole["buffers"].items():
            torch.testing.assert_close(got["buffers"][key], value, **tol, msg=key)
    for key, value in whole["grads"].items():  # DDP sums (then averages) the processes' gradients
        torch.testing.assert_close(sum(r[name]["grads"][key] for r in synced), value, **tol, msg=key)
