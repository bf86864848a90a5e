"""Models: agreement with PyTorch's own RNNs, norm placement, padding, causality and batch independence."""

import copy

import pytest
import torch
from torch import nn

from normbench.errors import BatchStatisticsError
from normbench.models.rnn import NormGRULayer, NormLSTMLayer, RecurrentEncoder
from normbench.models.transformer import TransformerEncoder
from normbench.norm_factory import NormFactory, norm_factory
from normbench.norms import FluctuationMeter, batch_stat_norms

TOL = dict(atol=1e-5, rtol=1e-5)
VOCAB = 50


def _tokens(lengths: list[int], total: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), total, dtype=torch.long)
    mask = torch.zeros(len(lengths), total, dtype=torch.bool)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(1, VOCAB, (n,), generator=gen)
        mask[i, :n] = True
    return tokens, mask


def _pack_reference(ref: nn.RNNBase, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, _ = ref(packed)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def test_lstm_without_norm_equals_torch_lstm_on_padded_batch() -> None:
    torch.manual_seed(0)
    ours, ref = NormLSTMLayer(5, 8, norm_factory("none")), nn.LSTM(5, 8, batch_first=True)
    ours.input_proj.weight.data.copy_(ref.weight_ih_l0)
    ours.hidden_proj.weight.data.copy_(ref.weight_hh_l0)
    ours.bias.data.copy_(ref.bias_ih_l0 + ref.bias_hh_l0)
    lengths = [6, 3, 1]
    x, mask = torch.randn(3, 6, 5), _tokens(lengths, 6)[1]
    expected = _pack_reference(ref, x, lengths)
    torch.testing.assert_close(ours(x, mask)[mask], expected[mask], **TOL)


def test_gru_without_norm_equals_torch_gru_on_padded_batch() -> None:
    torch.manual_seed(0)
    ours, ref = NormGRULayer(5, 8, norm_factory("none")), nn.GRU(5, 8, batch_first=True)
    ours.input_proj.weight.data.copy_(ref.weight_ih_l0)
    ours.hidden_proj.weight.data.copy_(ref.weight_hh_l0)
    ours.input_bias.data.copy_(ref.bias_ih_l0)
    ours.hidden_bias.data.copy_(ref.bias_hh_l0)
    lengths = [2, 6, 4]
    x, mask = torch.randn(3, 6, 5), _tokens(lengths, 6)[1]
    expected = _pack_reference(ref, x, lengths)
    torch.testing.assert_close(ours(x, mask)[mask], expected[mask], **TOL)


def test_layer_norm_lstm_follows_ba_et_al_placement() -> None:
    """One step written out by hand with nn.LayerNorm on each pre-activation and on the cell state."""
    torch.manual_seed(0)
    layer = NormLSTMLayer(5, 8, norm_factory("layer"))
    for p in layer.parameters():
        p.data.normal_()
    x = torch.randn(4, 2, 5)
    mask = torch.ones(4, 2, dtype=torch.bool)
    ln_x, ln_h, ln_c = nn.LayerNorm(32), nn.LayerNorm(32), nn.LayerNorm(8)
    for ref, ours in [(ln_x, layer.norm_input), (ln_h, layer.norm_hidden), (ln_c, layer.norm_cell)]:
        ref.load_state_dict(ours.state_dict())
    h = c = torch.zeros(4, 8)
    for t in range(2):
        gates = ln_x(x[:, t] @ layer.input_proj.weight.T) + ln_h(h @ layer.hidden_proj.weight.T) + layer.bias
        i, f, g, o = gates.chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * ln_c(c).tanh()
    torch.testing.assert_close(layer(x, mask)[:, -1], h, **TOL)


def _encoder(kind: str, norm: str | NormFactory, **kw) -> nn.Module:
    """An encoder of ``kind`` with ``norm`` (a built-in by its option: group norm in 2 groups)."""
    torch.manual_seed(0)
    if isinstance(norm, str):
        norm = norm_factory(norm, **({"groups": 2} if norm == "group" else {}))
    if kind == "transformer":
        return TransformerEncoder(VOCAB, norm, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0, **kw)
    return RecurrentEncoder(VOCAB, norm, cell=kind, embed_dim=12, hidden_size=16, num_layers=2, dropout=0.0)


MODELS = ["transformer", "lstm", "gru"]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize(
    "norm", ["none", "layer", "rms", "group", "scale", "batch_masked", "batch_step", "power", "batch_renorm"]
)
@pytest.mark.parametrize("training", [True, False])
def test_extra_padding_never_changes_real_token_outputs(kind: str, norm: str, training: bool) -> None:
    model = _encoder(kind, norm).train(training)
    fresh = copy.deepcopy(model)  # a training call updates running statistics: compare from one state
    tokens, mask = _tokens([5, 2, 4], 5)
    short = model(tokens, mask)[mask]
    tokens_long, mask_long = _tokens([5, 2, 4], 12)
    tokens_long[~mask_long] = 7  # padding filled with a real token id: the mask alone must hide it
    torch.testing.assert_close(fresh(tokens_long, mask_long)[mask_long], short, **TOL)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("norm", ["layer", "rms", "none", "group", "scale"])
def test_batch_mates_never_change_an_example_for_per_token_norms(kind: str, norm: str) -> None:
    model = _encoder(kind, norm).train()
    tokens, mask = _tokens([6, 3, 5], 6, seed=1)
    other, other_mask = _tokens([6, 2, 4], 6, seed=2)
    alone = model(tokens[:1], mask[:1])
    with_mates = model(torch.cat([tokens[:1], other[1:]]), torch.cat([mask[:1], other_mask[1:]]))
    torch.testing.assert_close(with_mates[:1], alone, **TOL)
    together = model(tokens, mask)
    torch.testing.assert_close(together[:1], alone, **TOL)


def test_batch_norm_does_depend_on_batch_mates() -> None:
    """The counterpart of the test above: batch statistics couple the examples of a batch."""
    model = _encoder("transformer", "batch_masked").train()
    tokens, mask = _tokens([6, 3, 5], 6, seed=1)
    other, _ = _tokens([6, 3, 5], 6, seed=2)
    a = model(tokens, mask)[0]
    b = model(torch.cat([tokens[:1], other[1:]]), mask)[0]
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_causal_transformer_never_sees_the_future(norm: str) -> None:
    model = _encoder("transformer", norm, causal=True).train()
    tokens, mask = _tokens([8, 8], 8)
    base = model(tokens, mask)
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] % (VOCAB - 1)) + 1
    moved = model(changed, mask)
    torch.testing.assert_close(moved[:, :5], base[:, :5], **TOL)
    assert (moved[:, 5] - base[:, 5]).abs().max() > 1e-4


def test_causal_transformer_with_batch_norm_leaks_the_future_in_train_mode() -> None:
    model = _encoder("transformer", "batch", causal=True).train()
    tokens, mask = _tokens([8, 8], 8)
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] % (VOCAB - 1)) + 1
    assert (model(changed, mask)[:, :5] - model(tokens, mask)[:, :5]).abs().max() > 1e-4


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("norm", ["layer", "batch_masked"])
def test_transformer_without_mask_equals_the_masked_path_on_full_rows(causal: bool, norm: str) -> None:
    """Full-length rows come out the same from the unmasked path (fused attention, no mask) and from the masked one
    (a batch with one padded row beside them; eval mode, so no statistics cross rows)."""
    model = _encoder("transformer", norm, causal=causal).eval()
    tokens, mask = _tokens([7, 7, 7, 4], 7)
    torch.testing.assert_close(model(tokens[:3], None), model(tokens, mask)[:3], **TOL)


def test_transformer_takes_a_mask_without_padding_as_none(monkeypatch) -> None:
    """A language model's windows carry a mask of all True: attention gets no mask tensor, so the fused causal
    kernel (flash attention on a GPU) can run, and the outputs are the unmasked ones."""
    import torch.nn.functional as F

    calls = []
    sdpa = F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    model = _encoder("transformer", "batch_masked", causal=True).train()
    tokens, mask = _tokens([7, 7, 7], 7)
    out = model(tokens, mask)
    assert calls and all(attn_mask is None and is_causal for attn_mask, is_causal in calls)
    torch.testing.assert_close(out, _encoder("transformer", "batch_masked", causal=True).train()(tokens, None))
    calls.clear()
    model(*_tokens([7, 5, 7], 7))
    assert all(attn_mask is not None for attn_mask, _ in calls)


def test_pre_and_post_norm_are_different_models() -> None:
    tokens, mask = _tokens([5, 4], 5)
    pre = _encoder("transformer", "layer", pre_norm=True)
    post = _encoder("transformer", "layer", pre_norm=False)
    assert post.final_norm is None and pre.final_norm is not None
    assert not torch.allclose(pre(tokens, mask), post(tokens, mask))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_batch_norm_with_one_sequence_is_a_clear_error(kind: str) -> None:
    model = _encoder(kind, "batch_masked").train()
    tokens, mask = _tokens([4], 4)
    with pytest.raises(BatchStatisticsError, match=r"at least 2 sequences per training batch, got 1"):
        model(tokens, mask)
    model.eval()
    assert torch.isfinite(model(tokens, mask)).all()


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("norm", ["batch", "batch_masked", "batch_step", "power", "batch_renorm"])
def test_batch_norms_train_without_nan_on_ragged_batches(kind: str, norm: str) -> None:
    model = _encoder(kind, norm).train()
    tokens, mask = _tokens([7, 1, 3, 2], 7)
    out = model(tokens, mask)
    out[mask].sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("norm", ["batch", "batch_masked", "batch_step", "power", "batch_renorm", "layer", "rms"])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("meter", [False, True], ids=["", "meter"])
def test_every_norm_trains_under_bf16_autocast_with_float32_statistics(
    kind: str, norm: str, padded: bool, meter: bool
) -> None:
    """What ``precision=bf16-mixed`` (scale=gpu) does to the norms, on the CPU's autocast: a training step runs,
    its outputs are the float32 model's to about bf16's precision, and running statistics stay float32 and move;
    with the fluctuation meter too (batch statistics from ``_moments``, not the native kernel)."""
    tokens, mask = _tokens([7, 3, 5, 2] if padded else [7, 7, 7, 7], 7)
    reference = _encoder(kind, norm).train()
    model = copy.deepcopy(reference)
    for _, layer in batch_stat_norms(model) if meter else ():
        layer.fluctuation = FluctuationMeter()
    expected = reference(tokens, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens, mask)
    out[mask].float().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # on average: at a step with two real sequences a batch norm outputs +-1, which bf16 may flip where they are close
    assert (out[mask].float() - expected[mask]).abs().mean() < 0.03
    for (name, ours), (_, initial) in zip(batch_stat_norms(model), batch_stat_norms(_encoder(kind, norm)), strict=True):
        assert ours.running_var.dtype == torch.float32, name
        assert not torch.equal(ours.running_var, initial.running_var), name


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_cells_give_per_step_norms_their_time_step(kind: str) -> None:
    """batch_step inside a cell keeps running statistics for exactly the steps it saw (Cooijmans et al.)."""
    model = _encoder(kind, norm_factory("batch_step", max_steps=10)).train()
    tokens, mask = _tokens([6, 4, 6], 6)
    model(tokens, mask)
    layer = model.layers[0]
    updated = (layer.norm_hidden.running_var != 1).any(dim=1)
    assert updated[:6].all() and not updated[6:].any()


MODES = ["train", "train, fluctuation meter", "train, fluctuation meter, no running update", "eval"]


@pytest.mark.parametrize("cell", [NormLSTMLayer, NormGRULayer])
@pytest.mark.parametrize("norm", ["batch", "batch_masked", "batch_step"])
@pytest.mark.parametrize("mode", MODES)
def test_the_input_side_normalized_for_all_steps_at_once_equals_one_call_per_step(cell, norm: str, mode: str) -> None:
    """The hoisted input-side norm (``normalize_steps``) against the per-step calls it replaces: outputs, every
    gradient, the running statistics and the fluctuation record, with lengths [9, 7, 5, 2, 1]: steps 5-6 have two
    real sequences, and steps 7-8 one, which falls back on the running statistics in force there."""
    from normbench.models.rnn import _NormRecurrentLayer  # noqa: F401  (the flag lives on the base class)
    from normbench.norm_factory import recurrent
    from normbench.norms import FluctuationMeter

    torch.manual_seed(0)
    factory = recurrent(norm_factory(norm))
    hoisted = cell(6, 8, factory).double()  # float64: two-sequence statistics amplify float32 rounding
    with torch.no_grad():  # running statistics away from their initial values, so a wrong one shows
        for module in hoisted.modules():
            if hasattr(module, "running_mean") and module.running_mean is not None:
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    per_step = copy.deepcopy(hoisted)
    per_step.input_steps_at_once = False
    lengths = [9, 7, 5, 2, 1]
    mask = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(5, 9, 6, dtype=torch.float64)
    meters = []
    for layer in (hoisted, per_step):
        layer.train(mode != "eval")
        if mode.startswith("train, fluctuation"):  # the meter reads the running statistics in force at each step
            layer.norm_input.update_running = not mode.endswith("no running update")
            layer.norm_input.fluctuation = FluctuationMeter()
            meters.append(layer.norm_input.fluctuation)
    outputs, grads = [], []
    for layer in (hoisted, per_step):
        xi = x.clone().requires_grad_(True)
        out = layer(xi, mask)
        (out * mask[..., None] * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        outputs.append(out)
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])

    torch.testing.assert_close(outputs[0], outputs[1], **TOL)
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference, **TOL)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(hoisted.norm_input, name), getattr(per_step.norm_input, name), **TOL)
    if norm != "batch_step":  # batch_step counts calls, one per batch when hoisted
        assert int(hoisted.norm_input.num_batches_tracked) == int(per_step.norm_input.num_batches_tracked)
    if meters:
        assert meters[0].calls == meters[1].calls > 0
        for key, value in meters[1].result().items():
            assert meters[0].result()[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("cell", [NormLSTMLayer, NormGRULayer])
@pytest.mark.parametrize("norm", ["none", "layer", "batch", "batch_masked", "batch_step", "power", "batch_renorm"])
@pytest.mark.parametrize("mode", ["train", "eval", "left padded"])
def test_stepping_only_the_running_sequences_equals_carrying_every_row(cell, norm: str, mode: str) -> None:
    """The packed steps (sequences sorted longest first, a step computes the running ones only) against every row
    through every step with the state carried over padding: outputs at every position, every gradient and the
    running statistics, for unsorted lengths with a tie, one sequence of length 1 and a last step with none
    running. Naive batch norm (padding in its statistics) and a left-padded batch take the carrying path."""
    from normbench.models.rnn import StepPlan
    from normbench.norm_factory import recurrent

    torch.manual_seed(0)
    packed = cell(6, 8, recurrent(norm_factory(norm))).double()
    with torch.no_grad():
        for module in packed.modules():
            if getattr(module, "running_mean", None) is not None:
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    carried = copy.deepcopy(packed)
    carried.running_rows_only = False
    lengths = torch.tensor([4, 9, 1, 7, 7, 3])
    mask = torch.arange(10)[None, :] < lengths[:, None]
    if mode == "left padded":
        mask = mask.flip(1)
    plan = StepPlan.of(mask, packed._norms_skip_padding())
    assert (plan.order is not None) == (norm != "batch" and mode != "left padded")
    x = torch.randn(6, 10, 6, dtype=torch.float64)
    results = []
    for layer in (packed, carried):
        layer.train(mode != "eval")
        xi = x.clone().requires_grad_(True)
        out = layer(xi, mask)
        (out * mask[..., None] * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        results.append([out, xi.grad, *(p.grad for p in layer.parameters()), *layer.buffers()])
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, **TOL)
