"""Test-set evaluations at other lengths, batch sizes and padding: the same numbers as a datamodule built for them."""

from pathlib import Path

import pytest
import torch

from normbench.data import MRPolarityDataModule
from normbench.errors import ConfigError
from normbench.instruments.evaluation import extra_evaluations
from normbench.models.rnn import RecurrentEncoder
from normbench.models.transformer import TransformerEncoder
from normbench.norm_factory import norm_factory
from normbench.run.task import SequenceClassifier


def _datamodule(mr_file: Path, tmp_path: Path, **kwargs) -> MRPolarityDataModule:
    dm = MRPolarityDataModule(path=str(mr_file), cache_dir=str(tmp_path), vocab_size=300, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def _module(encoder) -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(encoder, num_classes=2)


def test_other_lengths_equal_a_datamodule_built_with_that_max_len(mr_file: Path, tmp_path: Path) -> None:
    dm = _datamodule(mr_file, tmp_path, batch_size=16, max_len=4)
    module = _module(RecurrentEncoder(dm.vocab_size, norm_factory("batch_step"), hidden_size=16, embed_dim=16))
    metrics, notes = extra_evaluations(module, dm, lengths=[4, 12])
    assert notes == [] and module.training  # the module's mode comes back
    for length in (4, 12):
        module.eval()
        reference = module.evaluate(_datamodule(mr_file, tmp_path, batch_size=16, max_len=length).test_dataloader())
        module.train()
        assert metrics[f"test/acc@len={length}"] == reference["acc"]
        assert metrics[f"test/loss@len={length}"] == pytest.approx(reference["loss"], rel=1e-6)
    assert metrics["test/loss@len=4"] != metrics["test/loss@len=12"]  # longer inputs really reach the model


def test_batch_size_one_changes_nothing_with_running_statistics_but_batch_statistics(
    mr_file: Path, tmp_path: Path
) -> None:
    dm = _datamodule(mr_file, tmp_path, batch_size=16)
    module = _module(
        TransformerEncoder(dm.vocab_size, norm_factory("batch_masked"), d_model=16, n_heads=2, n_layers=1, d_ff=32)
    )
    module.train()
    for batch in list(dm.train_dataloader())[:5]:  # move the running statistics away from (0, 1)
        module(*batch[:2])
    metrics, notes = extra_evaluations(module, dm, batch_sizes=[1, 16])
    assert notes == []
    assert metrics["test/acc@eval_batch=1"] == metrics["test/acc@eval_batch=16"]
    assert metrics["test/loss@eval_batch=1"] == pytest.approx(metrics["test/loss@eval_batch=16"], rel=1e-5)
    # served one sequence at a time, batch statistics are one sequence's own: a different model
    assert metrics["test/loss_batch_stats@eval_batch=1"] != pytest.approx(metrics["test/loss@eval_batch=1"], rel=1e-3)


def test_batch_statistics_of_one_sequence_in_a_recurrent_cell_are_noted_not_invented(
    mr_file: Path, tmp_path: Path
) -> None:
    dm = _datamodule(mr_file, tmp_path, batch_size=16)
    module = _module(RecurrentEncoder(dm.vocab_size, norm_factory("batch_masked"), hidden_size=16, embed_dim=16))
    metrics, notes = extra_evaluations(module, dm, batch_sizes=[1])
    assert "test/acc@eval_batch=1" in metrics and "test/acc_batch_stats@eval_batch=1" not in metrics
    assert len(notes) == 1 and notes[0].startswith("batch statistics at eval batch 1: batch norm inside a recurrent")


def test_padding_the_test_set_moves_only_naive_batch_statistics(mr_file: Path, tmp_path: Path) -> None:
    dm = _datamodule(mr_file, tmp_path, batch_size=16)
    for option in ("batch", "batch_masked", "layer"):
        module = _module(
            TransformerEncoder(dm.vocab_size, norm_factory(option), d_model=16, n_heads=2, n_layers=1, d_ff=32)
        )
        for batch in list(dm.train_dataloader())[:5]:  # running statistics away from (0, 1)
            module(*batch[:2])
        metrics, notes = extra_evaluations(module, dm, pad_to=[0, 64])
        module.eval()
        reference = module.evaluate(_datamodule(mr_file, tmp_path, batch_size=16, pad_to=64).test_dataloader())
        module.train()
        assert notes == [] and metrics["test/loss@pad_to=64"] == pytest.approx(reference["loss"], rel=1e-6)
        # running statistics: the pads never reach an output, whatever the norm
        assert metrics["test/loss@pad_to=64"] == pytest.approx(metrics["test/loss@pad_to=0"], rel=1e-5)
        moved = metrics["test/loss_batch_stats@pad_to=64"] - metrics["test/loss_batch_stats@pad_to=0"]
        if option == "batch":  # naive batch statistics are counted over the pads
            assert abs(moved) > 1e-3
        else:
            assert moved == pytest.approx(0, abs=1e-5)


def test_per_step_statistics_past_their_steps_are_noted_under_beyond_error(mr_file: Path, tmp_path: Path) -> None:
    dm = _datamodule(mr_file, tmp_path, batch_size=16, max_len=4)
    norm = norm_factory({"_target_": "normbench.norms.StepBatchNorm", "max_steps": 4, "beyond": "error"})
    module = _module(RecurrentEncoder(dm.vocab_size, norm, hidden_size=16, embed_dim=16))
    metrics, notes = extra_evaluations(module, dm, lengths=[4, 12])
    assert "test/acc@len=4" in metrics and "test/acc@len=12" not in metrics
    assert len(notes) == 1 and notes[0].startswith("running statistics at length 12: norm=batch_step has running")


def test_bad_evaluation_settings_are_refused(mr_file: Path, tmp_path: Path) -> None:
    dm = _datamodule(mr_file, tmp_path)
    module = _module(RecurrentEncoder(dm.vocab_size, norm_factory("layer"), hidden_size=8, embed_dim=8))
    with pytest.raises(ConfigError, match=r"^evaluate.lengths holds 0; accepted: a list of integers >= 1$"):
        extra_evaluations(module, dm, lengths=[0])
    with pytest.raises(ConfigError, match=r"^evaluate.pad_to holds -1; accepted: a list of integers >= 0$"):
        extra_evaluations(module, dm, pad_to=[-1])
    with pytest.raises(ConfigError, match=r"evaluate.lengths / .* / evaluate.pad_to need .* has none"):
        extra_evaluations(module, object(), batch_sizes=[1])
