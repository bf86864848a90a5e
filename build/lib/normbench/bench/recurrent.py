"""2b. Recurrent cells: the project's LSTM/GRU layers (a step loop with the norm inside the recurrence) against
``nn.LSTM``/``nn.GRU`` at the same sizes on the same padded batch, and each norm against ``norm=none``,
forward + backward, every variant of a cell interleaved round by round in one process.

The reference gets what it needs to skip the padding, a ``pack_padded_sequence`` (cuDNN's packed kernel on a
GPU); packing and unpacking are timed with it, since the project's layers take and give the padded batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from normbench.bench.norm_cost import fwd_bwd, norm_config, padded_batch
from normbench.bench.setup import compose_config
from normbench.bench.timing import calls_for, interleave, median, paired_ratio, seconds_per_call
from normbench.models.rnn import CELLS
from normbench.norm_factory import norm_factory, recurrent
from normbench.norms import NORMS

#: norm=none / nn.LSTM (or nn.GRU) on a CPU, at most; on a GPU the reference is cuDNN and the figure reported
NATIVE_TARGET = 1.3
#: norm=<name> / norm=none, at most (the other norms are reported)
NORM_TARGETS = {"layer": 1.3, "batch_masked": 1.3}
NATIVE = {"lstm": nn.LSTM, "gru": nn.GRU}


class PackedRNN(nn.Module):
    """``nn.LSTM``/``nn.GRU`` on a padded batch as the project's layers take it: packed by the lengths, run,
    unpacked to ``[B, T, H]`` (zeros at padding), so both sides of a ratio start and end with the same tensors."""

    def __init__(self, rnn: nn.RNNBase, lengths: Tensor) -> None:
        super().__init__()
        self.rnn = rnn
        self.lengths = lengths.cpu()  # pack_padded_sequence wants them on the host

    def forward(self, x: Tensor) -> Tensor:
        packed = pack_padded_sequence(x, self.lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def native_label(cell: str, device: torch.device) -> str:
    """What the reference runs on: cuDNN's kernel on a GPU (when torch may use it), else ATen's."""
    cudnn = device.type == "cuda" and torch.backends.cudnn.enabled and torch.backends.cudnn.is_available()
    return f"nn.{NATIVE[cell].__name__} ({'cuDNN' if cudnn else 'ATen'}, packed)"


def cell_sizes(cell: str, overrides: list[str]) -> tuple[int, int]:
    """``(embed_dim, hidden_size)`` of ``model=<cell>`` as ``train.py`` composes it."""
    model = compose_config([*overrides, f"model={cell}"]).model
    return int(model.embed_dim), int(model.hidden_size)


def recurrent_cost(
    cells: list[str],
    names: list[str],
    lengths: Tensor,
    overrides: list[str],
    device: torch.device,
    rounds: int,
    block: float,
) -> list[dict[str, Any]]:
    """Per cell: ``norm=none`` against the native module, then each other norm against ``norm=none``.

    The gradient is zero at padded positions (what a loss on real tokens gives), the same on every variant.
    """
    names = ["none", *(n for n in names if n != "none" and n in NORMS)]
    rows = []
    for cell in cells:
        embed_dim, hidden = cell_sizes(cell, overrides)
        x, mask = padded_batch(lengths, embed_dim, device)
        grad = torch.randn(*mask.shape, hidden, device=device) * mask[..., None]
        torch.manual_seed(0)
        native = PackedRNN(NATIVE[cell](embed_dim, hidden, batch_first=True), lengths).to(device).train()
        calls = {"native": fwd_bwd(native, x, grad, None)}
        for name in names:
            layer = CELLS[cell](embed_dim, hidden, recurrent(norm_factory(norm_config(name, overrides))))
            calls[name] = fwd_bwd(layer.to(device).train(), x, grad, mask)
        repeats = {key: calls_for(call, device, block) for key, call in calls.items()}
        times = interleave(
            {key: (lambda c=call, n=repeats[key]: seconds_per_call(c, n, device)) for key, call in calls.items()},
            rounds,
        )
        layer_name = CELLS[cell].__name__
        for name in names:
            reference = "native" if name == "none" else "none"
            ratio = paired_ratio(times[name], times[reference])
            if name == "none":
                limit = NATIVE_TARGET if device.type == "cpu" else None
                reference_label = native_label(cell, device)
            else:
                limit = NORM_TARGETS.get(name)
                reference_label = f"{layer_name} norm=none"
            rows.append(
                {
                    "layer": f"{layer_name} norm={name}",
                    "shape [B,T,C]": "x".join(str(s) for s in x.shape),
                    "padding %": 100.0 * (1.0 - float(mask.float().mean())),
                    "ours ms": 1e3 * median(times[name]),
                    "reference": reference_label,
                    "reference ms": 1e3 * median(times[reference]),
                    "ratio": ratio,
                    "target": f"<= {limit}" if limit else "reported",
                    "met": ("yes" if ratio <= limit else "no") if limit else "-",
                }
            )
    return rows
