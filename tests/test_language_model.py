"""Language modeling: metrics against a hand computation, the token-stream windows, the instruments on an LM."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.text import Perplexity

from normbench.data.collate import IGNORE_INDEX, pad_lm_collate
from normbench.data.language_modeling import LanguageModelingDataModule, WindowDataset
from normbench.data.tokenizer import encode_texts, load_or_train_tokenizer
from normbench.errors import ConfigError
from normbench.instruments.callbacks import BatchPartnerDependence, BatchStatFluctuation, CausalLeakProbe, TrainEvalGap
from normbench.models.rnn import RecurrentEncoder
from normbench.models.transformer import TransformerEncoder
from normbench.norm_factory import norm_factory
from normbench.run.task import LanguageModel, build_task

# a bigram model over 4 symbols: P(next | previous), rows sum to 1
BIGRAM = [[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.6, 0.3]]


class OneHot(nn.Module):
    """A causal stand-in encoder: the features of a position are the one-hot code of its token."""

    causal = True
    output_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4, 4, padding_idx=0)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return nn.functional.one_hot(tokens, 4).float()


def bigram_model(char_level: bool = True) -> LanguageModel:
    model = LanguageModel(OneHot(), vocab_size=4, char_level=char_level)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor(BIGRAM).log().T)  # logits[t] = log P(. | token t)
        model.head.bias.zero_()
    return model


# (inputs, next tokens) of different lengths: batch 1 holds 2 + 4 targets, batch 2 holds 1
EXAMPLES = [([1, 2], [2, 0]), ([3, 3, 2, 0], [3, 2, 0, 1]), ([2], [3])]


def test_metrics_equal_a_hand_computation_over_real_tokens_only() -> None:
    pairs = [(prev, nxt) for ids, targets in EXAMPLES for prev, nxt in zip(ids, targets, strict=True)]
    nll = -sum(math.log(BIGRAM[prev][nxt]) for prev, nxt in pairs) / len(pairs)  # per token, not per batch
    correct = sum(max(range(4), key=lambda j, p=prev: BIGRAM[p][j]) == nxt for prev, nxt in pairs)

    loader = DataLoader(
        [(torch.tensor(i), torch.tensor(t)) for i, t in EXAMPLES], batch_size=2, collate_fn=pad_lm_collate
    )
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (logged,) = trainer.validate(bigram_model(), loader, verbose=False)
    assert logged["val/loss"] == pytest.approx(nll, rel=1e-6)
    assert logged["val/ppl"] == pytest.approx(math.exp(nll), rel=1e-6)
    assert logged["val/bpc"] == pytest.approx(nll / math.log(2), rel=1e-6)
    assert logged["val/acc"] == pytest.approx(correct / len(pairs))
    assert "val/bpt" not in logged

    (logged,) = trainer.validate(bigram_model(char_level=False), loader, verbose=False)
    assert logged["val/bpt"] == pytest.approx(nll / math.log(2), rel=1e-6) and "val/bpc" not in logged

    reference = Perplexity(ignore_index=IGNORE_INDEX)  # torchmetrics' own, on the same padded batches
    model = bigram_model()
    for tokens, mask, target in loader:
        reference.update(model(tokens, mask), target)
    assert float(reference.compute()) == pytest.approx(math.exp(nll), rel=1e-5)
    assert model.evaluate(loader) == pytest.approx({"acc": correct / len(pairs), "loss": nll})


def test_padding_is_neither_scored_nor_attended() -> None:
    tokens, mask, target = pad_lm_collate([(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 1])), ([2], [1])], pad_id=0)
    assert tokens.tolist() == [[1, 2, 3], [2, 0, 0]] and mask.tolist() == [[True] * 3, [True, False, False]]
    assert target.tolist() == [[2, 3, 1], [1, IGNORE_INDEX, IGNORE_INDEX]]
    model = bigram_model()
    before = model.evaluate([(tokens, mask, target)])
    after = model.evaluate([(tokens.masked_fill(~mask, 3), mask, target)])  # other values at padded positions
    assert before == after


def test_a_bidirectional_encoder_is_refused_for_language_modeling() -> None:
    encoder = TransformerEncoder(10, norm_factory("layer"), d_model=8, n_heads=2, n_layers=1, d_ff=8, causal=False)
    with pytest.raises(ConfigError, match=r"data=shakespeare_char is language modeling .* model.causal=true"):
        LanguageModel(encoder, 10, data_name="shakespeare_char")
    LanguageModel(
        TransformerEncoder(10, norm_factory("layer"), d_model=8, n_heads=2, n_layers=1, d_ff=8, causal=True), 10
    )
    LanguageModel(RecurrentEncoder(10, norm_factory("layer"), hidden_size=8, embed_dim=8), 10)


# --- the LM datamodule ---------------------------------------------------------------------------

TEXT = {
    "train": ["To be, or not to be:", "that is the question.", "", "Whether 'tis nobler in the mind"],
    "val": ["to suffer the slings", "and arrows"],
    "test": ["of outrageous fortune,", "Or to take arms"],
}


class LinesDataModule(LanguageModelingDataModule):
    def __init__(self, lines: dict[str, list[str]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines = lines

    def load_lines(self) -> dict[str, list[str]]:
        return self.lines


def test_windows_cover_the_stream_once_with_targets_shifted_by_one() -> None:
    stream = torch.arange(10, dtype=torch.int32)
    data = WindowDataset(stream, 4)
    items = [data[i] for i in range(len(data))]
    assert [(x.tolist(), y.tolist()) for x, y in items] == [
        ([0, 1, 2, 3], [1, 2, 3, 4]),
        ([4, 5, 6, 7], [5, 6, 7, 8]),
        ([8], [9]),
    ]
    assert data.lengths() == [4, 4, 1] and items[0][0].dtype == torch.long
    assert len(WindowDataset(torch.arange(9), 4)) == 2  # 8 targets: two full windows
    full = WindowDataset(stream, 4, full_only=True)
    assert len(full) == 2 and full.lengths() == [4, 4]


def test_lm_datamodule_streams_lines_with_eos_and_caches(tmp_path: Path) -> None:
    dm = LinesDataModule(TEXT, seq_len=8, batch_size=2, cache_dir=str(tmp_path), name="lines")
    dm.setup()
    tok = dm.tokenizer
    eos = tok.token_to_id("[EOS]")
    train = dm._require()["train"]
    expected = [i for line in TEXT["train"] for i in [*tok.encode(line, add_special_tokens=False).ids, eos]]
    assert train.stream.tolist() == expected and dm.char_level and tok.token_to_id("T") != tok.token_to_id("t")
    assert dm.lengths("train") == [8] * ((len(expected) - 1) // 8)  # training windows are all full
    assert sum(dm.lengths("val")) == len(dm._require()["val"].stream) - 1  # evaluation covers every token
    tokens, mask, target = next(iter(dm.val_dataloader()))
    assert tokens.shape == (2, 8) and mask.all() and torch.equal(tokens[0, 1:], target[0, :-1])
    stats = dm.stats()
    assert stats["task"] == "lm" and stats["max_len"] == 8 and stats["tokens"]["train"] == len(expected)
    assert stats["train_padding_share"] == 0.0
    assert len(list((tmp_path / "streams").glob("char-*.pt"))) == 3

    again = LinesDataModule(TEXT, seq_len=8, batch_size=2, cache_dir=str(tmp_path))
    again.setup()
    assert torch.equal(again._require()["test"].stream, dm._require()["test"].stream)


def test_eval_tokens_cut_validation_and_test_and_the_evaluation_loader_serves_one_window_at_a_time_or_longer_windows(
    tmp_path: Path,
) -> None:
    full = LinesDataModule(TEXT, seq_len=8, batch_size=2, cache_dir=str(tmp_path))
    full.setup()
    dm = LinesDataModule(TEXT, seq_len=8, batch_size=2, cache_dir=str(tmp_path), eval_tokens=10)
    dm.setup()
    for split in ("val", "test"):  # the first 10 predicted tokens (11 with the first input)
        assert torch.equal(dm._require()[split].stream, full._require()[split].stream[:11])
    assert torch.equal(dm._require()["train"].stream, full._require()["train"].stream)
    batches = list(dm.evaluation_loader("test", batch_size=1))
    assert [len(tokens) for tokens, _, _ in batches] == [1, 1] and sum(int(m.sum()) for _, m, _ in batches) == 10
    # windows of another length over the same tokens: each predicted once, the first window max_len long
    longer = list(dm.evaluation_loader("test", max_len=6))
    assert [tokens.shape[1] for tokens, _, _ in longer] == [6] and int(longer[0][1].sum()) == 10
    assert torch.equal(longer[0][0][0, :6], dm._require()["test"].stream[:6].long())
    assert torch.equal(longer[0][2][0, :5], dm._require()["test"].stream[1:6].long())
    with pytest.raises(ConfigError, match=r"^evaluate.pad_to=128 needs a classification task"):
        dm.evaluation_loader("test", pad_to=128)
    with pytest.raises(ConfigError, match=r"^data.max_len=48 is a classification option"):
        LinesDataModule(TEXT, seq_len=8, max_len=48, cache_dir=str(tmp_path))


def test_char_fast_path_encodes_exactly_as_the_tokenizer(tmp_path: Path) -> None:
    text = ["Ünïcode ﬁ ligature, tabs\tand  spaces", "unseen: ~ç€"]
    for lowercase in (True, False):
        tok = load_or_train_tokenizer(text[:1], "char", 50, tmp_path, "fp", lowercase=lowercase)
        assert encode_texts(tok, "char", text) == [e.ids for e in tok.encode_batch(text, add_special_tokens=False)]


def test_epoch_size_samples_a_fresh_subset_each_epoch(tmp_path: Path) -> None:
    lines = {split: ["abcdefgh" * 20] for split in ("train", "val", "test")}
    dm = LinesDataModule(lines, seq_len=4, batch_size=4, train_windows=8, cache_dir=str(tmp_path))
    dm.setup()
    assert len(dm._require()["train"]) == 40
    first, second = dm.train_batches(0), dm.train_batches(1)
    assert [len(b) for b in first] == [4, 4] and first != second
    loader = dm.train_dataloader()
    assert len(loader) == 2 and sum(len(b[0]) for b in loader) == 8


def test_build_task_follows_the_datamodule(tmp_path: Path) -> None:
    dm = LinesDataModule(TEXT, seq_len=8, batch_size=2, cache_dir=str(tmp_path), name="lines")
    dm.setup()
    encoder = RecurrentEncoder(dm.vocab_size, norm_factory("layer"), hidden_size=8, embed_dim=8)
    module = build_task(dm, encoder, lr=1e-3)
    assert isinstance(module, LanguageModel) and module.head.out_features == dm.vocab_size
    assert module.monitor == ("val/loss", "min")


# --- the instruments on a language model ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", ["transformer", "gru"])
def test_lm_learns_and_the_instruments_measure_it(family: str, tmp_path: Path) -> None:
    lines = {"train": ["abcdefgh " * 8] * 16, "val": ["abcdefgh " * 8] * 2, "test": ["abcdefgh " * 8] * 2}
    dm = LinesDataModule(lines, seq_len=12, batch_size=8, cache_dir=str(tmp_path))
    dm.setup()
    torch.manual_seed(0)
    if family == "transformer":
        encoder = TransformerEncoder(
            dm.vocab_size, norm_factory("batch"), d_model=32, n_heads=2, n_layers=1, d_ff=64, causal=True
        )
    else:
        encoder = RecurrentEncoder(
            dm.vocab_size, norm_factory("batch_masked"), cell="gru", hidden_size=16, embed_dim=16
        )
    module = LanguageModel(encoder, dm.vocab_size, char_level=True, lr=2e-2)
    callbacks = [BatchStatFluctuation(5), TrainEvalGap(), BatchPartnerDependence(), CausalLeakProbe(4, 3)]
    trainer = L.Trainer(
        max_epochs=3, callbacks=callbacks, logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    trainer.fit(module, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["val/bpc"] < 0.5, logged  # a periodic text: almost certain after a few epochs (uniform: 3.3)
    assert logged["val/acc"] > 0.9
    assert logged["probe/partner_dependence"] > 0 and logged["stats/mean_dist"] > 0
    gap = logged["val/acc_batch_stats"] - logged["val/acc"]
    assert logged["val/train_eval_gap"] == pytest.approx(gap, abs=1e-6)
    # the same gap in bits per character: the two passes' mean losses (nats per token) over ln 2
    bits = (logged["val/loss_batch_stats"] - logged["val/loss"]) / math.log(2)
    assert logged["val/bpc_train_eval_gap"] == pytest.approx(bits, abs=1e-5)
    assert logged["val/bpc_batch_stats"] == pytest.approx(logged["val/loss_batch_stats"] / math.log(2), rel=1e-6)
    assert (logged["val/bpc_train_eval_gap"] == 0) == (family == "none")
    # batch norm over [B, T] mixes the future into the past; per-step statistics in a recurrence do not
    assert (logged["probe/causal_leak"] > 0) == (family == "transformer")
