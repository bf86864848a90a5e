"""Standard corpora on tiny fixtures in their published file formats (written here; no network), and the hub path
through a stand-in ``datasets`` module."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from conftest import data_config
from hydra.utils import instantiate

from normbench.data.corpora import (
    AGNewsDataModule,
    IMDBDataModule,
    PTBCharDataModule,
    PTBDataModule,
    SST2DataModule,
    WikiText2DataModule,
    WikiText103DataModule,
)
from normbench.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
WIKI = (
    " \n = Valkyria Chronicles = \n \n Senjō no Valkyria 3 : <unk> Chronicles is a tactical role @-@ playing game . \n"
)
PTB = " aer banknote berlitz calloway <unk> \n pierre <unk> N years old will join the board \n"


def write_wikitext(directory: Path, repeat: int = 30) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        (directory / f"wiki.{split}.tokens").write_text(WIKI * (repeat if split == "train" else 3))
    return directory


def write_ptb(directory: Path, char: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        text = PTB * (20 if split == "train" else 2)
        if char:
            text = "".join(" _ ".join(" ".join(w) for w in line.split()) + "\n" for line in text.splitlines())
        (directory / f"ptb.{'char.' if char else ''}{split}.txt").write_text(text)
    return directory


def write_imdb(directory: Path, n: int = 30) -> Path:
    for split in ("train", "test"):
        for label, words in (("pos", "a wonderful moving film"), ("neg", "a dull tedious film")):
            folder = directory / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(f"Review {i}: {words}.<br /><br />End.")
    return directory


def write_ag_news(directory: Path, n: int = 40) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [f'"{i % 4 + 1}","Title {i}","Topic {i % 4} news, with a comma\\and a break {i}"' for i in range(n)]
        (directory / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return directory


def write_sst2(directory: Path, n: int = 40) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [f'{"a gorgeous" if i % 2 else "a dreary"} "phrase" {i} \t{i % 2}' for i in range(n)]
    (directory / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (directory / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:10]) + "\n")
    return directory


def _setup(dm):
    dm.setup()
    return dm


@pytest.mark.parametrize("cls", [WikiText2DataModule, WikiText103DataModule])
def test_wikitext_files_are_word_level_as_published(cls, tmp_path: Path) -> None:
    dm = _setup(
        cls(path=str(write_wikitext(tmp_path / "wt")), tokenizer="whitespace", seq_len=8, cache_dir=str(tmp_path))
    )
    tok = dm.tokenizer
    train = dm._require()["train"].stream.tolist()
    line = " Senjō no Valkyria 3 : <unk> Chronicles is a tactical role @-@ playing game . "
    ids = [tok.token_to_id(w) for w in line.split()]
    # after " ", " = Valkyria Chronicles = ", " " and their line ends
    assert None not in ids and ids == train[7 : 7 + len(ids)]
    assert train[:2] == [tok.token_to_id("[EOS]"), tok.token_to_id("=")]  # a blank line is one end of line
    per_copy = sum(len(line.split()) + 1 for line in WIKI.removesuffix("\n").split("\n"))  # words + [EOS]
    assert not dm.char_level and dm.stats()["tokens"]["val"] == 3 * per_copy == 3 * 23


def test_ptb_word_and_char(tmp_path: Path) -> None:
    words = _setup(PTBDataModule(path=str(write_ptb(tmp_path / "p")), tokenizer="whitespace", cache_dir=str(tmp_path)))
    assert words.tokenizer.token_to_id("<unk>") is not None and words.stats()["tokens"]["test"] == 2 * (6 + 10)
    chars = _setup(
        PTBCharDataModule(
            path=str(write_ptb(tmp_path / "c", char=True)), tokenizer="whitespace", cache_dir=str(tmp_path)
        )
    )
    assert chars.char_level and {len(t) for t in chars.tokenizer.get_vocab()} - {1} == {5}  # [PAD] etc.
    assert chars.tokenizer.token_to_id("_") is not None


def test_imdb_tree(tmp_path: Path) -> None:
    dm = _setup(IMDBDataModule(path=str(write_imdb(tmp_path / "imdb")), vocab_size=100, cache_dir=str(tmp_path)))
    stats = dm.stats()
    assert (stats["num_train"] + stats["num_val"], stats["num_test"], stats["num_classes"]) == (60, 60, 2)
    assert stats["num_val"] == 7  # 0.1 / (0.8 + 0.1) of the official 60 training reviews
    texts = {t for t, _ in dm.read_local("train")}
    assert "Review 3: a wonderful moving film.  End." in texts and not any("<br" in t for t in texts)
    assert {label for t, label in dm.read_local("test") if "wonderful" in t} == {1}


def test_ag_news_csv(tmp_path: Path) -> None:
    dm = _setup(AGNewsDataModule(path=str(write_ag_news(tmp_path / "ag")), vocab_size=100, cache_dir=str(tmp_path)))
    examples = dm.read_local("train")
    assert examples[0] == ("Title 0. Topic 0 news, with a comma and a break 0", 0) and dm.num_classes == 4
    (tmp_path / "ag" / "test.csv").write_text('"x","no class","text"\n')
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "ag" / "test.csv")) + r":1: expected class index"):
        dm.read_local("test")


def test_sst2_tsv_with_dev_as_test(tmp_path: Path) -> None:
    dm = _setup(SST2DataModule(path=str(write_sst2(tmp_path / "sst")), vocab_size=100, cache_dir=str(tmp_path)))
    assert dm.stats()["num_test"] == 10 and dm.read_local("train")[1] == ('a gorgeous "phrase" 1 ', 1)


@pytest.mark.parametrize(
    ("cls", "missing"),
    [
        (WikiText2DataModule, "wiki.train.tokens"),
        (PTBDataModule, "ptb.train.txt"),
        (PTBCharDataModule, "ptb.char.train.txt"),
        (AGNewsDataModule, "train.csv"),
        (SST2DataModule, "train.tsv"),
        (IMDBDataModule, "train/neg"),
    ],
)
def test_a_missing_standard_file_is_named(cls, missing: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=re.escape(missing) + ": not found") as info:
        cls(path=str(tmp_path / "empty"), cache_dir=str(tmp_path)).setup()
    assert "\n" not in str(info.value)


def test_without_path_and_without_datasets_the_error_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match=r"data=imdb without data.path needs .*pip install 'normbench\[hf\]'"):
        IMDBDataModule(name="imdb", cache_dir=str(tmp_path)).setup()


def test_hub_path_through_a_stand_in_datasets_module(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def load_dataset(dataset, config, split):
        calls.append((dataset, config, split))
        if dataset == "ptb_text_only":
            return {"sentence": ["aer banknote <unk>", "pierre N years"] * (10 if split == "train" else 1)}
        if dataset == "stanfordnlp/imdb":
            return {"text": ["great<br />film", "awful film"] * 10, "label": [1, 0] * 10}
        raise ConnectionError("no network\nmore")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    chars = _setup(PTBCharDataModule(tokenizer="whitespace", cache_dir=str(tmp_path)))
    assert calls == [("ptb_text_only", "penn_treebank", s) for s in ("train", "validation", "test")]
    vocab = chars.tokenizer.get_vocab()
    assert {"a", "e", "r", "_", "<", ">"} <= set(vocab) and "aer" not in vocab
    imdb = _setup(IMDBDataModule(vocab_size=50, cache_dir=str(tmp_path)))
    assert imdb.read_hub("test")[0] == ("great film", 1)
    with pytest.raises(
        DataError,
        match=r"data=wikitext2: could not load Salesforce/wikitext/wikitext-2-v1 \[train\] .*"
        r"\(no network\); pass data.path=",
    ):
        WikiText2DataModule(name="wikitext2", cache_dir=str(tmp_path)).setup()


@pytest.mark.parametrize("name", ["wikitext2", "wikitext103", "ptb", "ptb_char", "imdb", "ag_news", "sst2"])
def test_configs_instantiate_on_fixtures(name: str, tmp_path: Path) -> None:
    writers = {
        "wikitext2": write_wikitext,
        "wikitext103": write_wikitext,
        "ptb": write_ptb,
        "imdb": write_imdb,
        "ag_news": write_ag_news,
        "sst2": write_sst2,
        "ptb_char": lambda d: write_ptb(d, char=True),
    }
    cfg = data_config(name)
    cfg.path, cfg.cache_dir, cfg.shuffle_seed = str(writers[name](tmp_path / "d")), str(tmp_path / "c"), 0
    dm = instantiate(cfg)
    dm.setup()
    assert dm.stats()["task"] == ("lm" if name in ("wikitext2", "wikitext103", "ptb", "ptb_char") else "classification")
