"""Train (or load from cache) a Hugging Face ``tokenizers`` tokenizer on the training split only.

Why train our own: no download, no pretrained vocabulary carrying information about the test set,
and a vocabulary size that is a config value. Why cache: training takes seconds and every job of a
sweep needs the same one; the cache key covers everything that changes the result, so a stale file
is never reused for other settings. Every kind trains to the same vocabulary on every run (for
WordPiece that takes a workaround, see `_continuing_subwords`), so a fresh cache repeats the results.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from normbench.data.fetch import write_bytes_atomic
from normbench.errors import ConfigError

log = logging.getLogger(__name__)

PAD = "[PAD]"
UNK = "[UNK]"
EOS = "[EOS]"  # end of a line in language modeling (one character, the newline, in char-level text)
SPECIAL_TOKENS = [PAD, UNK, EOS]  # order fixes the ids: [PAD] = 0, [UNK] = 1, [EOS] = 2
#: ``whitespace``: split on whitespace only, no normalization, for corpora that come tokenized (PTB, WikiText)
KINDS = ("wordpiece", "bpe", "word", "char", "whitespace")


def tokenizer_kind(kind: str) -> str:
    """``kind`` if it is one of KINDS; else the one-line error every datamodule gives for ``data.tokenizer``."""
    if kind not in KINDS:
        raise ConfigError(f"data.tokenizer={kind!r} is unknown; accepted: {', '.join(KINDS)}")
    return kind


CONTINUING_PREFIX = "##"
# bump whenever the way a kind is built below changes, so old cache files are no longer picked up
SETTINGS_VERSION = 3


def texts_fingerprint(texts: list[str]) -> str:
    """A sha256 over the texts (order included): the tokenizer is a function of exactly these."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _char_normalizer(lowercase: bool) -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()] if lowercase else [normalizers.NFKC()])


def _continuing_subwords(tok: Tokenizer, texts: list[str]) -> list[str]:
    """``##c`` for every character ``c`` that continues a word in ``texts``, sorted.

    Why: the WordPiece trainer gives these tokens ids in hash-map order, which changes from run to run,
    and breaks ties between equally frequent merges by id, so two trainings on the same texts give
    different vocabularies (huggingface/tokenizers#1794). Handing them to the trainer up front, after
    the special tokens, fixes their ids and with them the whole training.
    """
    chars: set[str] = set()
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return [CONTINUING_PREFIX + c for c in sorted(chars)]


def _keep_only_special_tokens(tok: Tokenizer) -> Tokenizer:
    """Drop the ``##c`` tokens from the added (matched-before-splitting) tokens; they stay in the vocabulary."""
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    return Tokenizer.from_str(json.dumps(spec))


def _build(kind: str, vocab_size: int, texts: list[str], lowercase: bool = True) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer of ``kind`` and the trainer that fills its vocabulary from ``texts``."""
    bert_norm = normalizers.BertNormalizer(lowercase=lowercase)
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.normalizer = bert_norm
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        fixed = SPECIAL_TOKENS + _continuing_subwords(tok, texts)
        trainer: trainers.Trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=fixed,
            continuing_subword_prefix=CONTINUING_PREFIX,
            show_progress=False,
        )
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = bert_norm
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.normalizer = bert_norm
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif kind == "char":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.normalizer = _char_normalizer(lowercase)
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif kind == "whitespace":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    else:
        tokenizer_kind(kind)
    return tok, trainer


def cache_path(cache_dir: Path, kind: str, vocab_size: int, data_fingerprint: str, lowercase: bool = True) -> Path:
    """Where the tokenizer for these settings is cached; the name hashes every input of training."""
    settings = {"kind": kind, "vocab_size": vocab_size, "data": data_fingerprint, "settings": SETTINGS_VERSION}
    key = json.dumps(settings | {"lowercase": lowercase}, sort_keys=True)
    return Path(cache_dir) / f"{kind}-{vocab_size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _load(path: Path) -> Tokenizer | None:
    """The cached tokenizer, or None (with a warning) when the file is unreadable or not ours."""
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises plain Exception on bad JSON
        msg = f"tokenizer cache {path} is unreadable ({str(err).splitlines()[0][:120]}); rebuilding it"
    else:
        if tok.token_to_id(PAD) == 0 and tok.token_to_id(UNK) is not None:
            return tok
        msg = f"tokenizer cache {path} lacks {PAD}=0/{UNK}; rebuilding it"
    log.warning(msg)  # one line on the console and in the job's log (Python prints it even unconfigured)
    return None


def _train_chars(tok: Tokenizer, texts: list[str], vocab_size: int) -> None:
    """The char kind's vocabulary: the most frequent normalized characters (what ``WordLevelTrainer`` keeps),
    counted in Python because the Rust pipeline's per-token overhead takes ~10 s on 5M characters."""
    counts = Counter()
    for text in texts:
        counts.update(tok.normalizer.normalize_str(text))
    # most frequent first, ties by character, so the vocabulary is a function of the texts alone
    chars = sorted(counts, key=lambda ch: (-counts[ch], ch))[: vocab_size - len(SPECIAL_TOKENS)]
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *chars])}
    tok.model = models.WordLevel(vocab=vocab, unk_token=UNK)
    tok.add_special_tokens(SPECIAL_TOKENS)


def load_or_train_tokenizer(
    texts: list[str], kind: str, vocab_size: int, cache_dir: Path, data_fingerprint: str, lowercase: bool = True
) -> Tokenizer:
    """Load the tokenizer for these settings from ``cache_dir``, or train it on ``texts`` and cache it.

    ``texts`` must be the training split only. ``[PAD]`` is id 0, ``[UNK]`` id 1 and ``[EOS]`` id 2 for
    every kind. ``lowercase=False`` keeps case (character-level language modeling, cased corpora).
    """
    tokenizer_kind(kind)
    if not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"data.vocab_size={vocab_size!r} is out of range; accepted: an integer >= 3")
    path = cache_path(Path(cache_dir), kind, vocab_size, data_fingerprint, lowercase)
    if path.is_file():
        tok = _load(path)
        if tok is not None:
            return tok
    tok, trainer = _build(kind, vocab_size, texts, lowercase)
    if kind == "char":
        _train_chars(tok, texts, vocab_size)
    else:
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if kind == "wordpiece":
        tok = _keep_only_special_tokens(tok)
    assert tok.token_to_id(PAD) == 0, "special tokens must come first"
    write_bytes_atomic(path, tok.to_str().encode("utf-8"))
    return tok


def encode_texts(tok: Tokenizer, kind: str, texts: Iterable[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens. The char kind maps normalized characters through the
    vocabulary directly: the same ids as ``tok.encode`` (tested), ten times faster on large corpora."""
    if kind != "char":
        texts = list(texts)
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: less work
        return [enc.ids for enc in encode(texts, add_special_tokens=False)]
    vocab, unk = tok.get_vocab(), tok.token_to_id(UNK)
    return [[vocab.get(ch, unk) for ch in tok.normalizer.normalize_str(text)] for text in texts]
