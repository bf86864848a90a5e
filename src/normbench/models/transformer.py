"""Transformer encoder (or causal decoder) whose every norm is the configured one, given the padding mask."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normbench.errors import ConfigError
from normbench.models.inputs import FeatureProjection, check_inputs
from normbench.norm_factory import NormFactory


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Fixed sinusoidal position codes (Vaswani et al. 2017): defined for any length, so runs can be
    tested on sequences longer than those seen in training."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return codes


class SelfAttention(nn.Module):
    """Multi-head self-attention on PyTorch's fused scaled-dot-product kernel."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"model.d_model={d_model} must be divisible by model.n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = nn.Dropout(dropout)  # a module, so switching dropout off by module type reaches it

    def forward(self, x: Tensor, attn_mask: Tensor | None, is_causal: bool = False) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        dropout = self.attn_dropout.p if self.attn_dropout.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal)
        return self.out(y.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    """Attention + feed-forward with the norm before (pre-norm) or after (post-norm) each residual."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm: NormFactory, pre_norm: bool):
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.norm1 = norm(d_model)
        self.norm2 = norm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None, attn_mask: Tensor | None, is_causal: bool = False) -> Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x, mask), attn_mask, is_causal))
            return x + self.drop(self.ff(self.norm2(x, mask)))
        x = self.norm1(x + self.drop(self.attn(x, attn_mask, is_causal)), mask)
        return self.norm2(x + self.drop(self.ff(x)), mask)


class TransformerEncoder(nn.Module):
    """Token embedding (or, for numeric inputs, a linear projection of the ``num_features`` channels) +
    sinusoidal positions + blocks; returns per-token features ``[B, T, d_model]``.

    ``causal=True`` makes it a decoder for language modeling (each position sees only the past);
    the padding mask keeps padded keys out of every attention row either way.
    """

    def __init__(
        self,
        vocab_size: int | None,
        norm: NormFactory,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.1,
        pre_norm: bool = True,
        causal: bool = False,
        pad_id: int = 0,
        num_features: int | None = None,
        input_norm: NormFactory | None = None,
    ) -> None:
        super().__init__()
        check_inputs(vocab_size, num_features, input_norm)
        self.causal = causal
        self.output_dim = d_model
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id) if vocab_size is not None else None
        self.input_proj = FeatureProjection(num_features, d_model, input_norm) if num_features else None
        if self.embed is not None:
            # N(0, 1/d_model) so that the sqrt(d_model) scaling in forward gives unit-scale token codes, the scale
            # of the position codes: with nn.Embedding's N(0, 1) they were 11x larger at d_model=128 and drowned
            # the positions, which a causal LM needs (it stalled near a bigram model's 3.6 bits per character)
            nn.init.normal_(self.embed.weight, std=d_model**-0.5)
            with torch.no_grad():
                self.embed.weight[pad_id].zero_()
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout, norm, pre_norm) for _ in range(n_layers)
        )
        self.final_norm = norm(d_model) if pre_norm else None
        self.drop = nn.Dropout(dropout)
        self.register_buffer("positions", sinusoidal_positions(512, d_model), persistent=False)

    def _positions(self, length: int) -> Tensor:
        if length > self.positions.shape[0]:
            self.positions = sinusoidal_positions(2 * length, self.output_dim).to(self.positions.device)
        return self.positions[:length]

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """``tokens[B, T]`` ids, or ``features[B, T, F]`` for numeric inputs. ``mask=None`` says every position
        is real (no padding): attention then needs no mask tensor and can use its fused causal kernels (flash
        attention on GPUs). A mask without padding (a language model's windows) is taken as None, at the cost of
        one look at it (not inside a compiled graph, which it would break)."""
        if mask is not None and not torch.compiler.is_compiling() and bool(mask.all()):
            mask = None
        length = tokens.shape[1]
        # numeric features: their projection, at whatever scale the inputs have (what input_scale measures)
        x = self.embed(tokens) * math.sqrt(self.output_dim) if self.embed is not None else self.input_proj(tokens, mask)
        x = self.drop(x + self._positions(length))
        attn_mask, is_causal = None, self.causal
        if mask is not None:
            attn_mask, is_causal = mask[:, None, None, :], False
            if self.causal:
                attn_mask = attn_mask & torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        for block in self.blocks:
            x = block(x, mask, attn_mask, is_causal)
        return self.final_norm(x, mask) if self.final_norm is not None else x
