"""The instruments: exact invariances of the probes, and every instrument's metrics in a real training run."""

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from normbench.data.mr import MRPolarityDataModule
from normbench.errors import NonFiniteError
from normbench.instruments.callbacks import (
    BatchPartnerDependence,
    BatchStatFluctuation,
    CausalLeakProbe,
    GradNormMonitor,
    Instrument,
    NonFiniteGuard,
    TrainEvalGap,
    all_finite,
)
from normbench.instruments.probes import batch_statistics_mode, causal_leak, first_non_finite_module, partner_dependence
from normbench.models.rnn import RecurrentEncoder
from normbench.models.transformer import TransformerEncoder
from normbench.norm_factory import norm_factory
from normbench.norms import batch_stat_norms
from normbench.run.task import SequenceClassifier

VOCAB = 40


def _transformer(norm: str, causal: bool = False) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(
        VOCAB, norm_factory(norm), d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.1, causal=causal
    )


def _batch(n: int, length: int, seed: int, ragged: bool = True):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, VOCAB, (n, length), generator=gen)
    lengths = torch.randint(2, length + 1, (n,), generator=gen) if ragged else torch.full((n,), length)
    mask = torch.arange(length)[None] < lengths[:, None]
    return tokens.masked_fill(~mask, 0), mask


def test_batch_statistics_mode_changes_nothing_it_touches() -> None:
    model = _transformer("batch_masked").eval()
    state = copy.deepcopy(model.state_dict())
    with batch_statistics_mode(model):
        assert model.training and not model.blocks[0].drop.training
        model(*_batch(4, 6, 0))
    assert not model.training and all(n.update_running for n in [model.blocks[0].norm1, model.final_norm])
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize(
    ("norm", "dependent"), [("layer", False), ("rms", False), ("batch_masked", True), ("batch", True)]
)
@pytest.mark.parametrize("family", ["transformer", "lstm"])
def test_partner_dependence_is_zero_exactly_for_per_token_norms(norm: str, dependent: bool, family: str) -> None:
    torch.manual_seed(0)
    model = (
        _transformer(norm) if family == "transformer" else RecurrentEncoder(VOCAB, norm_factory(norm), hidden_size=16)
    )
    probe = _batch(3, 5, seed=0)
    partners = [_batch(5, length, seed=s) for s, length in [(1, 4), (2, 7), (3, 6)]]
    with batch_statistics_mode(model):
        value = partner_dependence(model, probe, partners)
    assert value > 1e-4 if dependent else value == 0.0


@pytest.mark.parametrize(("norm", "leaks"), [("layer", False), ("rms", False), ("batch_step", False), ("batch", True)])
def test_causal_leak_probe_in_a_causal_transformer(norm: str, leaks: bool) -> None:
    """Per-token norms and per-position batch norm keep the past intact; batch norm over time does not."""
    model = _transformer(norm, causal=True)
    tokens, _ = _batch(6, 10, seed=4, ragged=False)
    with batch_statistics_mode(model):
        leak = causal_leak(model, tokens, position=4, offset=3, vocab_size=VOCAB)
    assert leak > 1e-4 if leaks else leak == 0.0


def test_the_probes_refuse_too_short_sequences_and_measure_nothing_past_the_end() -> None:
    from normbench.instruments.probes import length_dependence

    model = _transformer("batch_step", causal=True)
    tokens, _ = _batch(4, 6, seed=2, ragged=False)
    with pytest.raises(ValueError, match=r"^probe sequences have 6 tokens, need more than 6$"):
        causal_leak(model, tokens, position=4, offset=2, vocab_size=VOCAB)
    mask = torch.ones(tokens.shape, dtype=torch.bool)
    # nothing lies at or past length 6 of 6-token sequences: no difference to measure, exactly 0
    assert length_dependence(model, [(tokens, mask)], tokens, mask, length=6) == 0.0


@pytest.fixture
def one_thread():
    """Many tiny forward passes: one torch thread (two threads on two busy cores are ~30x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("norm", "leaks"), [("layer", False), ("rms", False), ("batch_step", False), ("batch", True)])
def test_causal_leak_probe_at_every_position_and_offset(norm: str, leaks: bool, one_thread) -> None:
    """Every position at the offsets a leak of a single step reaches (a causal mask shifted by one lets t see
    t + 1, and t + 2 through the two layers), so such a leak is read wherever it happens."""
    model = _transformer(norm, causal=True)
    length = 8
    tokens, _ = _batch(6, length, seed=4, ragged=False)
    with batch_statistics_mode(model):
        read = {
            (position, offset): causal_leak(model, tokens, position=position, offset=offset, vocab_size=VOCAB)
            for position in range(length - 1)
            for offset in (1, 2)
            if position + offset < length
        }
    assert len(read) == 2 * length - 3
    if leaks:  # statistics over the time axis carry every later token back to every earlier position
        assert min(read.values()) > 1e-6, read
    else:
        assert set(read.values()) == {0.0}, {k: v for k, v in read.items() if v}


def test_first_non_finite_module_names_the_layer() -> None:
    model = _transformer("layer")
    with torch.no_grad():
        model.blocks[1].ff[0].weight[0, 0] = float("nan")
    found = first_non_finite_module(model, lambda: model(*_batch(2, 5, 0)))
    assert found == "blocks.1.ff.0 (Linear)"
    assert first_non_finite_module(_transformer("layer"), lambda: model(*_batch(2, 5, 0))) is None


class _PoisonWeights(L.Callback):
    """Puts a NaN into a norm's weight before the given step, as a diverging run would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.encoder.blocks[0].norm2.weight.fill_(float("nan"))


def _fit(
    mr_file: Path, tmp_path: Path, encoder, callbacks, epochs: int = 2, batch_size: int = 16, **data: int
) -> L.Trainer:
    torch.manual_seed(0)
    dm = MRPolarityDataModule(path=str(mr_file), cache_dir=str(tmp_path), batch_size=batch_size, vocab_size=300, **data)
    dm.prepare_data()
    dm.setup("fit")
    module = SequenceClassifier(encoder(dm.vocab_size), dm.num_classes, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def _instruments():
    return [
        BatchStatFluctuation(every_n_steps=5),
        TrainEvalGap(),
        BatchPartnerDependence(),
        CausalLeakProbe(position=3, offset=2),
        GradNormMonitor(every_n_steps=5),
        NonFiniteGuard(),
    ]


@pytest.mark.slow
def test_instruments_log_their_metrics_in_a_training_run(mr_file: Path, tmp_path: Path) -> None:
    instruments = _instruments()
    trainer = _fit(
        mr_file, tmp_path, lambda v: RecurrentEncoder(v, norm_factory("batch_masked"), hidden_size=32), instruments
    )
    logged = trainer.callback_metrics
    fluctuation, gap = instruments[0].series["stats/mean_dist"], instruments[1].series["val/train_eval_gap"]
    steps_per_epoch = trainer.num_training_batches
    # measured on the batches of steps 0, 5, 10, ...; logged after their optimizer step, as Lightning counts
    assert [step for step, _ in fluctuation] == list(range(1, 2 * steps_per_epoch + 1, 5))
    assert fluctuation[-1][1] == pytest.approx(float(logged["stats/mean_dist"]))
    assert [step for step, _ in gap] == [steps_per_epoch, 2 * steps_per_epoch]  # one point per validation
    norm_layers = [name for name, _ in batch_stat_norms(trainer.lightning_module)]
    # the layer average of the per-layer distances, logged together
    for kind in ("mean_dist", "var_dist", "mean_shift", "scale_shift"):
        layers = [float(logged[f"stats/{name}/{kind}"]) for name in norm_layers]
        assert len(layers) >= 3 and all(value > 0 for value in layers)
        assert float(logged[f"stats/{kind}"]) == pytest.approx(sum(layers) / len(layers), rel=1e-6)
    totals = ("grad_norm/total", "grad_norm/max_total")
    per_layer = [float(v) for k, v in logged.items() if k.startswith("grad_norm/") and k not in totals]
    assert len(per_layer) >= 3 and all(value > 0 for value in per_layer)  # the layers partition the parameters
    assert float(logged["grad_norm/total"]) == pytest.approx(math.sqrt(sum(v * v for v in per_layer)), rel=1e-5)
    assert float(logged["grad_norm/max_total"]) >= float(logged["grad_norm/total"])  # the largest of all steps
    assert float(logged["probe/partner_dependence"]) > 0
    assert float(logged["probe/causal_leak"]) == 0.0  # per-step statistics never see the future
    gap = float(logged["val/acc_batch_stats"]) - float(logged["val/acc"])
    assert float(logged["val/train_eval_gap"]) == pytest.approx(gap, abs=1e-6)


@pytest.mark.slow
def test_validation_at_its_own_batch_size_keeps_val_acc_and_the_gap_measures_training_batches(
    mr_file: Path, tmp_path: Path
) -> None:
    """data.eval_batch_size batches the validation loop (here all 60 examples in one batch): in eval mode an
    example's output does not depend on its batch mates, so val/acc is what batches of the training size give;
    the train/eval gap's batch statistics stay those of training's batches of 8."""
    encoder = lambda v: RecurrentEncoder(v, norm_factory("batch_masked"), hidden_size=32)  # noqa: E731
    trainer = _fit(mr_file, tmp_path, encoder, [TrainEvalGap()], epochs=1, batch_size=8, eval_batch_size=60)
    module, dm, logged = trainer.lightning_module.eval(), trainer.datamodule, trainer.callback_metrics
    as_trained = dm.batch_statistics_loader("val")
    assert (trainer.val_dataloaders.batch_size, as_trained.batch_size) == (60, 8)
    assert float(logged["val/acc"]) == pytest.approx(module.evaluate(as_trained)["acc"], abs=1e-6)
    assert float(logged["val/loss"]) == pytest.approx(module.evaluate(as_trained)["loss"], rel=1e-5)
    with batch_statistics_mode(module):
        as_trained_loss = module.evaluate(as_trained, min_batch=2)["loss"]
        one_batch_loss = module.evaluate(dm.val_dataloader(), min_batch=2)["loss"]
    assert float(logged["val/loss_batch_stats"]) == pytest.approx(as_trained_loss, rel=1e-5)
    assert abs(one_batch_loss - as_trained_loss) > 1e-3  # the statistics of 60 are not those of 8


@pytest.mark.slow
def test_layer_norm_run_has_no_gap_no_partner_dependence_and_no_fluctuation(mr_file: Path, tmp_path: Path) -> None:
    # 60 validation examples in batches of 59 and 1: the gap compares the same 59 (one sequence has no batch stats)
    trainer = _fit(mr_file, tmp_path, lambda v: _transformer_for(v, "layer"), _instruments(), epochs=1, batch_size=59)
    logged = trainer.callback_metrics
    assert float(logged["val/train_eval_gap"]) == 0.0 and float(logged["probe/partner_dependence"]) == 0.0
    assert "stats/mean_dist" not in logged and "probe/causal_leak" not in logged  # no batch stats; not causal


def _transformer_for(vocab: int, norm: str) -> TransformerEncoder:
    return TransformerEncoder(vocab, norm_factory(norm), d_model=32, n_heads=2, n_layers=1, d_ff=64)


@pytest.mark.slow
def test_non_finite_guard_stops_with_step_and_layer(mr_file: Path, tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at step 3 .*layer encoder.blocks.0.norm2"):
        _fit(mr_file, tmp_path, lambda v: _transformer_for(v, "layer"), [NonFiniteGuard(), _PoisonWeights(3)])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_guard_names_the_first_parameter_with_a_non_finite_gradient(bad: float) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    for param in model.parameters():
        param.grad = torch.full_like(param, 1e30)  # huge but finite: no alarm
    trainer = SimpleNamespace(global_step=7, current_epoch=1)
    NonFiniteGuard().on_after_backward(trainer, model)
    model[1].weight.grad[1, 2] = bad
    with pytest.raises(NonFiniteError, match=r"non-finite gradient at step 7 \(epoch 1\) in layer 1.weight;"):
        NonFiniteGuard().on_after_backward(trainer, model)


def test_all_finite_checks_every_value_of_every_dtype_and_changes_none() -> None:
    """The guard's one-sync check (PyTorch's AMP non-finite kernel at an unscale factor of 1): the extremes of
    float32 and the smallest subnormal are finite, a NaN or inf anywhere in any dtype group is not, and the
    checked values come back bit for bit."""
    finite = [torch.tensor([3.4e38, -3.4e38, -0.0, 1e-45]), torch.ones(5, dtype=torch.float64)]
    finite.append(torch.zeros(3).bfloat16())
    before = [t.clone() for t in finite]
    assert all_finite(finite)
    assert all(torch.equal(t, b) and t.dtype == b.dtype for t, b in zip(finite, before, strict=True))
    for group in range(3):
        for bad in (float("nan"), float("inf"), -float("inf")):
            poisoned = [t.clone() for t in finite]
            poisoned[group][-1] = bad
            assert not all_finite(poisoned), (group, bad)


def test_an_instrument_that_logs_an_undeclared_key_stops_at_once():
    """What an instrument logs must be declared (normbench.instruments.metrics): the run keeps and the report
    reads only declared keys, so an undeclared one would vanish without a word."""
    from normbench.instruments.metrics import CAUSAL_LEAK

    class Leaky(Instrument):
        declared = CAUSAL_LEAK

    logged = {}
    module = SimpleNamespace(log_dict=lambda values, **_: logged.update(values))
    trainer = SimpleNamespace(global_step=3)
    Leaky()._log(trainer, module, {"probe/causal_leak": 0.5})
    assert logged == {"probe/causal_leak": 0.5}
    with pytest.raises(RuntimeError, match="probe/causal_lek"):
        Leaky()._log(trainer, module, {"probe/causal_lek": 0.5})


def test_the_declarations_cover_what_the_instruments_log():
    """Every key a declared pattern stands for, as the instruments name them."""
    from normbench.instruments.metrics import BATCH_STAT_FLUCTUATION, GRAD_NORMS, TRAIN_EVAL_GAP, declared

    assert BATCH_STAT_FLUCTUATION.declares("stats/encoder.layers.0.norm1/var_dist")
    assert not BATCH_STAT_FLUCTUATION.declares("stats/encoder.layers.0.norm1/std")
    assert GRAD_NORMS.declares("grad_norm/encoder") and GRAD_NORMS.declares("grad_norm/max_total")
    assert TRAIN_EVAL_GAP.declares("val/bpt_batch_stats") and not TRAIN_EVAL_GAP.declares("val/bpc")
    assert not declared("val/acc") and not declared("train/loss")


def test_a_probe_gap_with_a_non_finite_output_on_either_side_is_inf() -> None:
    """One NaN or inf among the real tokens of either output makes the gap inf (never NaN, never a number)."""
    from normbench.instruments.probes import _real_gap

    finite, mask = torch.zeros(2, 3, 4), torch.tensor([[True, True, False], [True, False, False]])
    assert _real_gap(finite, finite + 0.5, mask) == 0.5
    for bad in (float("nan"), float("inf")):
        poisoned = finite.clone()
        poisoned[0, 1, 2] = bad
        assert _real_gap(finite, poisoned, mask) == math.inf and _real_gap(poisoned, finite, mask) == math.inf
    poisoned = finite.clone()
    poisoned[0, 2] = float("nan")  # at a padded position: not a real token
    assert _real_gap(finite, poisoned, mask) == 0.0


def test_probes_never_build_an_autograd_graph() -> None:
    """The probes run inside training (every validation): a forward pass under grad mode would keep a graph
    and its activations alive for nothing."""
    from normbench.instruments.probes import mode_gap

    model = _transformer_for(VOCAB, "batch_masked")
    tokens, mask = torch.randint(2, VOCAB, (4, 6)), torch.ones(4, 6, dtype=torch.bool)
    original, modes = model.forward, []

    def recording(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        modes.append(torch.is_grad_enabled())
        return original(t, m)

    model.forward = recording  # what the probes call, directly or through the model
    partner_dependence(model, (tokens[:1], mask[:1]), [(tokens[1:2], mask[1:2]), (tokens[2:3], mask[2:3])])
    mode_gap(model, tokens, mask)
    assert len(modes) == 4 and not any(modes)
