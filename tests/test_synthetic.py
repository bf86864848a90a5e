"""Synthetic controls: exact lengths and labels, the length distribution, reproducibility, learnability."""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import data_config
from hydra.utils import instantiate

from normbench.data.synthetic import (
    ListOpsDataModule,
    ParityDataModule,
    RecallDataModule,
    listops_expression,
    listops_value,
    recall_example,
    sample_lengths,
)
from normbench.errors import ConfigError
from normbench.models.rnn import RecurrentEncoder
from normbench.norm_factory import norm_factory
from normbench.run.task import SequenceClassifier

ROOT = Path(__file__).resolve().parents[1]


def test_listops_has_the_exact_length_and_the_value_of_its_expression() -> None:
    assert listops_value(["[MAX", "2", "9", "[MIN", "4", "7", "]", "0", "]"]) == 9
    assert listops_value(["[MED", "1", "8", "3", "6", "]"]) == 4  # int(median): (3 + 6) / 2 -> 4
    assert listops_value(["[SM", "9", "8", "[MED", "7", "]", "]"]) == 4
    rng = random.Random(0)
    depths = []
    for length in [1, 3, 4, 5, 17, 64, 300]:
        for _ in range(30):
            tokens, value = listops_expression(rng, length, max_args=5)
            assert len(tokens) == length and value == listops_value(tokens) and 0 <= value <= 9
            opened = [
                tokens[: i + 1].count("]") - sum(t.startswith("[") for t in tokens[: i + 1]) for i in range(length)
            ]
            depths.append(-min(opened))
            assert opened[-1] == 0  # balanced
    assert max(depths) >= 4  # nested, not flat lists
    with pytest.raises(ValueError, match="2 tokens"):
        listops_expression(rng, 2)


def test_recall_answers_with_the_last_value_of_the_queried_key() -> None:
    rng = random.Random(1)
    for length in range(4, 40):
        tokens, answer = recall_example(rng, length, num_keys=3, num_values=5)
        assert len(tokens) == length and tokens[-2] == "?"
        pairs = tokens[length % 2 : -2]
        bound = {k: v for k, v in zip(pairs[::2], pairs[1::2], strict=True)}
        assert f"v{answer}" == bound[tokens[-1]]


def test_length_spread_sets_the_padding_share() -> None:
    rng = random.Random(0)
    assert set(sample_lengths(rng, 500, 10, 50, 0.0)) == {50}
    full = sample_lengths(rng, 2000, 10, 50, 1.0)
    assert min(full) == 10 and max(full) == 50
    assert min(sample_lengths(rng, 2000, 10, 50, 0.5)) == 30
    shares = []
    for spread in (0.0, 0.5, 1.0):
        dm = ParityDataModule(num_train=256, num_val=8, num_test=8, min_len=4, max_len=40, spread=spread, batch_size=32)
        dm.setup()
        shares.append(dm.stats()["train_padding_share"])
    assert shares[0] == 0.0 < shares[1] < shares[2] < 0.5


@pytest.mark.parametrize("cls", [ListOpsDataModule, ParityDataModule, RecallDataModule])
def test_generated_data_is_fixed_by_data_seed_alone(cls) -> None:
    def make(data_seed: int):
        torch.manual_seed(data_seed + 7)  # the global RNG never matters
        dm = cls(num_train=50, num_val=10, num_test=10, min_len=5, max_len=30, data_seed=data_seed)
        dm.setup()
        return [(ids.tolist(), label) for split in ("train", "val", "test") for ids, label in dm._require()[split]]

    first = make(0)
    assert first == make(0) and first != make(1)
    dm = cls(num_train=50, num_val=10, num_test=10, min_len=5, max_len=30)
    dm.setup()
    tokens, mask, target = next(iter(dm.train_dataloader()))
    assert int(tokens.max()) < dm.vocab_size and (tokens[~mask] == 0).all() and int(tokens[mask].min()) >= 2
    assert int(target.max()) < dm.num_classes
    assert {len(ids) for ids, _ in dm._require()["train"]} <= set(range(5, 31))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spread": 1.5}, r"data.spread=1.5 is out of range; accepted: a number in \[0, 1\]"),
        ({"min_len": 20, "max_len": 10}, r"data.max_len=10 is out of range; accepted: an integer >= 20"),
        ({"min_len": 2}, r"data.min_len=2 is out of range; accepted: an integer >= 3"),
        ({"num_train": 0}, r"data.num_train=0"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ListOpsDataModule(**kwargs)


@pytest.mark.parametrize("name", ["listops", "parity", "recall"])
def test_configs_instantiate(name: str) -> None:
    cfg = data_config(name)
    cfg.shuffle_seed = 0
    cfg.num_train, cfg.num_val, cfg.num_test = 20, 5, 5
    dm = instantiate(cfg)
    dm.setup()
    assert dm.stats()["num_classes"] == {"listops": 10, "parity": 2, "recall": 10}[name]


@pytest.mark.slow
def test_an_lstm_learns_short_parity() -> None:
    """The control is learnable: a norm that breaks learning shows up as a failure here, not noise."""
    torch.manual_seed(0)
    dm = ParityDataModule(num_train=2048, num_val=256, num_test=64, min_len=2, max_len=6, batch_size=32)
    dm.setup()
    module = SequenceClassifier(
        RecurrentEncoder(dm.vocab_size, norm_factory("layer"), hidden_size=32, dropout=0.0), 2, lr=1e-2
    )
    trainer = L.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    assert module.evaluate(dm.val_dataloader())["acc"] > 0.95
