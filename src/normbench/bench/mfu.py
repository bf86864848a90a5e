"""Model FLOPs utilisation (GPU only): the project's Transformer, sized like GPT-2 small, as a causal
language model trained in bf16 with ``torch.compile``."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normbench.bench.gpu import peak_bf16_flops
from normbench.bench.timing import sync
from normbench.models.transformer import TransformerEncoder
from normbench.norm_factory import norm_factory

#: GPT-2 small (Radford et al. 2019), vocabulary padded to a multiple of 64 as in nanoGPT
GPT_SMALL = {"d_model": 768, "n_heads": 12, "n_layers": 12, "d_ff": 3072, "vocab_size": 50304}
TARGET = 0.35


class CausalLM(nn.Module):
    """``TransformerEncoder(causal=True)`` with a next-token head and its loss, so that ``torch.compile`` of the
    module takes the loss in too (as nanoGPT's model does): eager, the loss made a float32 copy of the logits,
    1.6 GB at 8 x 1024 x 50,304, and read it back, outside any fused kernel."""

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, n_layers: int, d_ff: int, norm: str) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(
            vocab_size, norm_factory(norm), d_model, n_heads, n_layers, d_ff, dropout=0.0, causal=True
        )
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: Tensor, targets: Tensor) -> Tensor:
        logits = self.head(self.encoder(tokens, None))  # no padding: fused causal attention
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def flops_per_token(model: CausalLM, seq_len: int) -> float:
    """Training FLOPs per token: 6 per weight of every matmul (forward 2, backward 4) plus attention's
    ``12 * layers * d_model * seq_len`` (PaLM, Chowdhery et al. 2022, appendix B); the embedding lookup is
    no matmul and is left out."""
    enc = model.encoder
    matmul_params = sum(p.numel() for p in model.parameters()) - enc.embed.weight.numel()
    return 6 * matmul_params + 12 * len(enc.blocks) * enc.output_dim * seq_len


def measure_mfu(
    device: torch.device,
    batch: int,
    seq_len: int,
    steps: int,
    warmup: int,
    norm: str = "layer",
    sizes: dict[str, int] | None = None,
    compile: bool = True,
) -> dict[str, Any]:
    """Training steps of the causal LM on random tokens (``sizes`` and ``compile`` exist to smoke-test this
    code on a CPU; the figure is only meaningful on a GPU)."""
    torch.manual_seed(0)
    sizes = dict(sizes or GPT_SMALL)
    name = "GPT-small" if sizes == GPT_SMALL else "tiny (" + ", ".join(f"{k}={v}" for k, v in sizes.items()) + ")"
    vocab = sizes.pop("vocab_size")
    model = CausalLM(vocab, **sizes, norm=norm).to(device).train()
    compiled = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    data = torch.randint(0, vocab, (batch, seq_len + 1), device=device)
    inputs, targets = data[:, :-1], data[:, 1:]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = compiled(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    tokens_per_s = batch * seq_len / seconds
    achieved = flops_per_token(model, seq_len) * tokens_per_s
    peak, matched = peak_bf16_flops(device) if device.type == "cuda" else (float("nan"), "CPU: no figure")
    mfu = achieved / peak
    return {
        "model": f"{name} causal LM, norm={norm}, bf16 autocast, "
        + ("torch.compile (loss included)" if compile else "eager"),
        "params M": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch x seq": f"{batch} x {seq_len}",
        "ms/step": 1e3 * seconds,
        "tokens/s": tokens_per_s,
        "TFLOP/s": achieved / 1e12,
        "peak TFLOP/s": f"{peak / 1e12:.0f} ({matched})",
        "MFU %": 100 * mfu,
        "peak MiB": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan"),
        "target": f">= {100 * TARGET:.0f}%",
        "met": "-" if not math.isfinite(mfu) else "yes" if mfu >= TARGET else "no",  # a CPU has no peak
    }
