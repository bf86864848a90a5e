"""LSTM and GRU written as cells, so the norm can sit inside the recurrence.

Placement follows Ba et al. (2016) for layer norm and Cooijmans et al. (2016) for batch norm: the
input and recurrent gate pre-activations are normalized separately, and the LSTM cell state is
normalized before its output non-linearity. With ``norm=none`` the layers compute exactly what
``nn.LSTM`` / ``nn.GRU`` compute. A sequence's state stays unchanged over its padded steps, so a padded batch
gives the same real-token outputs as each sequence alone: a step computes only the sequences still running where
the batch is right-padded and the norms leave padding out (``StepPlan``), else every row with the state carried.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from normbench.errors import BatchStatisticsError, ConfigError
from normbench.models.inputs import FeatureProjection, check_inputs
from normbench.norm_factory import NormFactory, recurrent
from normbench.norms import NoNorm, SequenceNorm

#: on a CPU the batch-statistic input side is normalized for all steps at once up to this batch size: beyond it the
#: per-step calls on the running rows cost less (batch_masked LSTM / GRU layers at hidden 128 and 48 steps, all
#: steps at once against per step: 0.86x / 0.81x at batch 8, 1.06x / 0.86x at 16, 1.13x / 1.04x at 32, 1.16x / 1.21x
#: at 64); on a GPU always (each per-step call waits for the host once)
CPU_STEPS_AT_ONCE = 16


class _NormRecurrentLayer(nn.Module):
    """One recurrent layer: input projection for all steps at once, then the step loop."""

    gates: int
    #: tensors in the recurrent state (``h`` first)
    states: int
    #: normalize the input side of all steps in one call where the norm can (``SequenceNorm.steps_at_once``);
    #: False calls it once per step, the reference the tests hold that call against
    input_steps_at_once: bool = True
    #: step only the sequences still running, as a packed sequence does (``StepPlan``); False carries every row
    #: through every step, the reference the tests hold the packed steps against
    running_rows_only: bool = True

    def __init__(self, input_size: int, hidden_size: int, norm: NormFactory) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        width = self.gates * hidden_size
        self.input_proj = nn.Linear(input_size, width, bias=False)
        self.hidden_proj = nn.Linear(hidden_size, width, bias=False)
        self.norm_input = norm(width)
        self.norm_hidden = norm(width)
        bound = 1.0 / math.sqrt(hidden_size)
        for weight in (self.input_proj.weight, self.hidden_proj.weight):
            nn.init.uniform_(weight, -bound, bound)

    def _cell(
        self, from_input: Tensor, state: tuple[Tensor, ...], step_mask: Tensor | None, t: int
    ) -> tuple[Tensor, ...]:
        """One step of the recurrence: the new state, ``h`` first."""
        raise NotImplementedError

    def _bias(self) -> Tensor:
        """The bias added to the input side's gates."""
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        plan = StepPlan.of(mask, self.running_rows_only and self._norms_skip_padding())
        x, mask = plan.sorted(x), plan.sorted(mask)
        bias = self._bias()
        projected, normed = self._project_inputs(x, mask, bias)
        state = tuple(x.new_zeros(x.shape[0], self.hidden_size) for _ in range(self.states))
        outputs = []
        for t, (running, step_mask) in enumerate(plan.steps):
            if running:
                if running < len(state[0]):  # the sequences that ended keep their last state in an earlier output
                    state = tuple(s[:running] for s in state)
                from_input = self._input_gates(projected, normed, t, running, step_mask, bias)
                new = self._cell(from_input, state, step_mask, t)
                state = (
                    new
                    if step_mask is None
                    else tuple(carry(step_mask, *pair) for pair in zip(new, state, strict=True))
                )
            outputs.append(state[0] if running else state[0][:0])
        return plan.outputs(outputs)

    def _norms_skip_padding(self) -> bool:
        """Whether every norm's output at a real row is the same with the padded rows left out of the call: per-token
        norms and the batch norms that mask padding, without synced statistics (every process must make the same
        collective calls at every step, whatever its sequences' lengths)."""
        norms = [m for m in self.modules() if isinstance(m, SequenceNorm)]
        return all((n.per_token or n.masks_padding) and not getattr(n, "sync", False) for n in norms)

    def _project_inputs(self, x: Tensor, mask: Tensor, bias: Tensor) -> tuple[tuple[Tensor, ...], bool]:
        """All steps' input projections, one tensor per step; normalized here too when the norm is per token or
        can take all steps at once, and then with ``bias`` already added (one op for all steps instead of one per step).

        ``unbind`` rather than ``projected[:, t]`` in the loop: the backward of each slice would fill a
        zero tensor of the whole ``[B, T, G]`` size, quadratic in the length (most of an LSTM step's time).
        """
        projected = self.input_proj(x)
        if self.norm_input.per_token:
            return (self.norm_input(projected, mask) + bias).unbind(1), True
        if self.norm_input.steps_at_once and self.input_steps_at_once and self._steps_at_once_pays(x):
            return (self.norm_input.normalize_steps(projected, mask) + bias).unbind(1), True
        return projected.unbind(1), False

    def _steps_at_once_pays(self, x: Tensor) -> bool:
        """``CPU_STEPS_AT_ONCE``; and always with synced statistics: every process must make the same collective
        calls, whatever its share of the batch."""
        return x.is_cuda or bool(getattr(self.norm_input, "sync", False)) or len(x) <= CPU_STEPS_AT_ONCE

    def _input_gates(
        self,
        steps: tuple[Tensor, ...],
        already_normed: bool,
        t: int,
        running: int,
        step_mask: Tensor | None,
        bias: Tensor,
    ) -> Tensor:
        rows = steps[t] if running == len(steps[t]) else steps[t][:running]
        return rows if already_normed else self.norm_input(rows, step_mask, step=t) + bias

    def _recurrent_gates(self, from_input: Tensor, h: Tensor, step_mask: Tensor | None, t: int) -> Tensor:
        """``from_input + N_h(W_h h)``: one fused multiply-add when there is no hidden-side norm."""
        if isinstance(self.norm_hidden, NoNorm):
            return torch.addmm(from_input, h, self.hidden_proj.weight.t())
        return from_input + self.norm_hidden(self.hidden_proj(h), step_mask, step=t)


def carry(step_mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """The new state where the sequence is real at this step, the old one over its padding."""
    return torch.where(step_mask[:, None], new, old)


class StepPlan:
    """Which rows each time step computes, and how the steps' outputs make the layer's ``[B, T, H]``.

    Packed (a right-padded batch of non-empty sequences whose norms leave padding out): the sequences sorted longest
    first, so the ones still running at step t are the first ``running[t]`` rows, and a step computes those rows
    only, as ``nn.LSTM`` does on a packed sequence: no padded rows in a batch norm's statistics, no gather of the
    real rows, no state to carry. The output at a padded position is the sequence's last state, as when carried;
    one gather at the end puts every output in place and the batch back in its order. Otherwise every row steps
    and a step's mask carries the state over padding. One host sync per forward plans every step.
    """

    def __init__(
        self, steps: list[tuple[int, Tensor | None]], order: Tensor | None = None, index: Tensor | None = None
    ) -> None:
        #: per step: how many rows step (the first ones), and the mask of the real ones among them (None: all)
        self.steps = steps
        self.order = order  # the batch sorted, where it was not
        self.index = index  # [B, T]: each output's row in the steps' outputs, concatenated (packed)

    @classmethod
    def of(cls, mask: Tensor, skip_padding: bool) -> StepPlan:
        batch, length = mask.shape
        positions = torch.arange(length, device=mask.device)
        lengths = mask.sum(1)
        sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
        running = (sorted_lengths[None, :] > positions[:, None]).sum(1)
        packable = ((positions < lengths[:, None]) == mask).all() & (lengths > 0).all() & skip_padding
        identity = (order == torch.arange(batch, device=mask.device)).all()
        # one transfer to the host for the whole plan
        plan = torch.cat([packable[None], identity[None], mask.all(0), running]).tolist()
        (packed, sorted_already), full, counts = plan[:2], plan[2 : 2 + length], plan[2 + length :]
        if not packed:
            return cls([(batch, None if full[t] else mask[:, t]) for t in range(length)])
        last_step = torch.minimum(positions[None, :], sorted_lengths[:, None] - 1)  # [B, T], in sorted order
        index = (torch.cumsum(running, 0) - running)[last_step] + torch.arange(batch, device=mask.device)[:, None]
        if not sorted_already:
            index = index[torch.argsort(order)]
        return cls([(k, None) for k in counts], None if sorted_already else order, index)

    def sorted(self, x: Tensor) -> Tensor:
        return x if self.order is None else x.index_select(0, self.order)

    def outputs(self, per_step: list[Tensor]) -> Tensor:
        """``[B, T, H]`` from each step's output rows."""
        if self.index is None:
            return torch.stack(per_step, dim=1)
        rows = torch.cat(per_step)
        return rows.index_select(0, self.index.reshape(-1)).view(*self.index.shape, rows.shape[-1])


class NormLSTMLayer(_NormRecurrentLayer):
    """LSTM: gates = N_x(W_x x) + N_h(W_h h) + b;  h = o * tanh(N_c(c))."""

    gates, states = 4, 2

    def __init__(self, input_size: int, hidden_size: int, norm: NormFactory) -> None:
        super().__init__(input_size, hidden_size, norm)
        self.norm_cell = norm(hidden_size)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        with torch.no_grad():
            self.bias[hidden_size : 2 * hidden_size].fill_(1.0)  # forget gate open at the start

    def _bias(self) -> Tensor:
        return self.bias

    def _cell(
        self, from_input: Tensor, state: tuple[Tensor, ...], step_mask: Tensor | None, t: int
    ) -> tuple[Tensor, ...]:
        h, c = state
        gates = self._recurrent_gates(from_input, h, step_mask, t)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(self.norm_cell(c_new, step_mask, step=t))
        return h_new, c_new


class NormGRULayer(_NormRecurrentLayer):
    """GRU as in ``nn.GRU``, with N_x(W_x x) and N_h(W_h h) in place of the two projections."""

    gates, states = 3, 1

    def __init__(self, input_size: int, hidden_size: int, norm: NormFactory) -> None:
        super().__init__(input_size, hidden_size, norm)
        self.input_bias = nn.Parameter(torch.zeros(3 * hidden_size))
        self.hidden_bias = nn.Parameter(torch.zeros(3 * hidden_size))

    def _bias(self) -> Tensor:
        return self.input_bias

    def _cell(
        self, from_input: Tensor, state: tuple[Tensor, ...], step_mask: Tensor | None, t: int
    ) -> tuple[Tensor, ...]:
        (h,) = state
        from_hidden = self._recurrent_gates(self.hidden_bias, h, step_mask, t)
        r_x, z_x, n_x = from_input.chunk(3, dim=-1)
        r_h, z_h, n_h = from_hidden.chunk(3, dim=-1)
        r = torch.sigmoid(r_x + r_h)
        z = torch.sigmoid(z_x + z_h)
        n = torch.tanh(n_x + r * n_h)
        return ((1 - z) * n + z * h,)


CELLS: dict[str, type[_NormRecurrentLayer]] = {"lstm": NormLSTMLayer, "gru": NormGRULayer}


class RecurrentEncoder(nn.Module):
    """Token embedding (or, for numeric inputs, a linear projection of the ``num_features`` channels) +
    stacked normalized LSTM/GRU layers; returns per-step features ``[B, T, H]``.

    Recurrent layers are causal by construction, so the same encoder serves language modeling.
    """

    def __init__(
        self,
        vocab_size: int | None,
        norm: NormFactory,
        cell: str = "lstm",
        embed_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.1,
        pad_id: int = 0,
        num_features: int | None = None,
        input_norm: NormFactory | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"unknown model.cell {cell!r}; accepted: {', '.join(CELLS)}")
        check_inputs(vocab_size, num_features, input_norm)
        self.output_dim = hidden_size
        self.causal = True  # a recurrence only sees the past
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id) if vocab_size is not None else None
        self.input_proj = FeatureProjection(num_features, embed_dim, input_norm) if num_features else None
        sizes = [embed_dim] + [hidden_size] * num_layers
        # called once per time step: a step with fewer than two running sequences uses running statistics
        self.layers = nn.ModuleList(CELLS[cell](sizes[i], hidden_size, recurrent(norm)) for i in range(num_layers))
        self.drop = nn.Dropout(dropout)
        self.uses_batch_stats = any(isinstance(m, SequenceNorm) and m.uses_batch_stats for m in self.modules())

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.training and self.uses_batch_stats and tokens.shape[0] < 2:
            raise BatchStatisticsError(
                f"batch norm inside a recurrent cell normalizes each time step over the batch, which needs "
                f"at least 2 sequences per training batch, got {tokens.shape[0]}: use data.batch_size >= 2 "
                "or a norm without batch statistics (norm=layer, norm=rms)"
            )
        x = self.drop(self.embed(tokens) if self.embed is not None else self.input_proj(tokens, mask))
        for layer in self.layers:
            x = self.drop(layer(x, mask))
        return x
