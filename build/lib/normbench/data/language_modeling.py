"""Language modeling data: a corpus as one token stream per split, cut into fixed-length windows.

Each split's lines are encoded and joined with ``[EOS]`` after every line (the newline of
character-level text, Mikolov's ``<eos>`` of word-level corpora), and the stream is cut into
non-overlapping windows of ``seq_len`` inputs whose targets are the same positions shifted by one, so
every token but the first of a split is predicted exactly once per pass (the last window may be
shorter). The tokenizer is trained on the training split only; encoded streams are cached under
keys that cover the tokenizer and the text, because encoding a large corpus takes longer than training.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from normbench.data.base import TokenizedDataModule, positive_int
from normbench.data.fetch import write_bytes_atomic
from normbench.data.tokenizer import EOS, encode_texts, load_or_train_tokenizer, texts_fingerprint, tokenizer_kind
from normbench.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class WindowDataset(Dataset):
    """Non-overlapping windows of a token stream: item ``i`` is ``(stream[iL : iL+L], stream[iL+1 : iL+L+1])``.

    ``full_only`` leaves out a last, shorter window (training: no padding in any batch).
    """

    def __init__(self, stream: Tensor, seq_len: int, full_only: bool = False) -> None:
        if len(stream) < 2:
            raise ValueError("a language-modeling stream needs at least 2 tokens")
        self.stream, self.seq_len = stream, seq_len
        self.predicted = len(stream) - 1
        self._len = self.predicted // seq_len if full_only else -(-self.predicted // seq_len)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.seq_len
        end = min(start + self.seq_len, self.predicted)
        return self.stream[start:end].long(), self.stream[start + 1 : end + 1].long()

    def lengths(self) -> list[int]:
        n = len(self)
        return [self.seq_len] * (n - 1) + [min(self.seq_len, self.predicted - (n - 1) * self.seq_len)] if n else []


def encode_stream(tokenizer, kind: str, lines: Sequence[str], eos_id: int) -> Tensor:
    """The ids of every line followed by ``eos_id``, as one int32 stream."""
    ids: list[int] = []
    for line_ids in encode_texts(tokenizer, kind, lines):
        ids.extend(line_ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.int32)


class LanguageModelingDataModule(TokenizedDataModule):
    """Base LM datamodule; batches are ``(tokens[B, T], mask[B, T], next_tokens[B, T])``.

    Subclasses implement ``load_lines`` (the lines of each split). ``train_windows`` caps an epoch at
    that many windows, a fresh ``(seed, epoch)`` sample each epoch, so a large corpus trains in epochs of
    a chosen size. ``char_level`` says whether each token is one character (bits per character).
    """

    task = "lm"

    def __init__(
        self,
        batch_size: int = 32,
        seq_len: int = 128,
        vocab_size: int = 256,
        tokenizer: str = "char",
        lowercase: bool = False,
        train_windows: int | None = None,
        max_len: int | None = None,
        eval_tokens: int | None = None,
        drop_last: bool = True,  # a last training batch of one window has no batch statistics
        **loader: Any,
    ) -> None:
        if max_len is not None:  # a scale's cut of classification snippets (scale=gpu sets 80)
            raise ConfigError(
                f"data.max_len={max_len!r} is a classification option; a language model's windows are "
                "data.seq_len long: set data.max_len=null and change data.seq_len"
            )
        super().__init__(batch_size=batch_size, drop_last=drop_last, **loader)
        self.seq_len = positive_int("seq_len", seq_len)
        self.vocab_size_requested = positive_int("vocab_size", vocab_size, minimum=4)
        self.tokenizer_kind = tokenizer_kind(tokenizer)
        self.lowercase = bool(lowercase)
        self.train_windows = None if train_windows is None else positive_int("train_windows", train_windows)
        # validation and test on the first eval_tokens tokens of their splits (None: all): the instruments
        # evaluate the validation split again at every validation, in batches of the training batch size
        self.eval_tokens = None if eval_tokens is None else positive_int("eval_tokens", eval_tokens, minimum=2)
        self.tokenizer = None

    # --- hook for subclasses -------------------------------------------------------------------
    def load_lines(self) -> dict[str, list[str]]:
        """The lines (without line ends) of the ``train``, ``val`` and ``test`` splits."""
        raise NotImplementedError

    @property
    def char_level(self) -> bool:
        """Every token is one character (and ``[EOS]`` the newline): bits per token = bits per character."""
        return self.tokenizer_kind == "char"

    # --- building the splits -------------------------------------------------------------------
    def build_splits(self) -> dict[str, WindowDataset]:
        lines = self.load_lines()
        for split in SPLITS:
            if not any(line.strip() for line in lines.get(split, [])):
                raise DataError(f"{self.name or type(self).__name__}: the {split} split has no text")
        self.tokenizer = load_or_train_tokenizer(
            lines["train"],
            self.tokenizer_kind,
            self.vocab_size_requested,
            self.cache_dir / "tokenizers",
            texts_fingerprint(lines["train"]),
            lowercase=self.lowercase,
        )
        streams = {split: self._stream(lines[split]) for split in SPLITS}
        if self.eval_tokens is not None:
            streams.update({split: streams[split][: self.eval_tokens + 1] for split in ("val", "test")})
        if len(streams["train"]) <= self.seq_len:
            raise DataError(
                f"{self.name or type(self).__name__}: the train split has {len(streams['train'])} tokens, "
                f"fewer than one window of data.seq_len={self.seq_len} + 1"
            )
        return {split: WindowDataset(streams[split], self.seq_len, full_only=split == "train") for split in SPLITS}

    def _stream(self, lines: list[str]) -> Tensor:
        """The encoded split, from the stream cache when this tokenizer has encoded this text before."""
        key = hashlib.sha256(self.tokenizer.to_str().encode() + texts_fingerprint(lines).encode()).hexdigest()
        path = self.cache_dir / "streams" / f"{self.tokenizer_kind}-{key[:24]}.pt"
        if path.is_file():
            try:
                return torch.load(path, weights_only=True)
            except Exception:  # noqa: BLE001  (a truncated cache file is rebuilt)
                path.unlink(missing_ok=True)
        stream = encode_stream(self.tokenizer, self.tokenizer_kind, lines, self.tokenizer.token_to_id(EOS))
        buffer = io.BytesIO()
        torch.save(stream, buffer)
        write_bytes_atomic(path, buffer.getvalue())
        return stream

    def epoch_size(self) -> int | None:
        return self.train_windows

    def evaluation_loader(
        self, split: str, max_len: int | None = None, batch_size: int | None = None, pad_to: int | None = None
    ):
        """``split``'s windows in order, ``max_len`` long instead of ``data.seq_len`` (the same tokens in longer
        or shorter windows: length extrapolation) and/or batched by another ``batch_size`` than training used
        (generation serves one sequence at a time: ``evaluate.batch_sizes: [1]``)."""
        if pad_to:
            raise ConfigError(
                f"evaluate.pad_to={pad_to!r} needs a classification task; a language model's windows hold no "
                "padding: leave evaluate.pad_to empty"
            )
        data = WindowDataset(self._require()[split].stream, max_len) if max_len else None  # type: ignore[union-attr]
        return self._loader(split, data=data, batch_size=batch_size or self.batch_size)

    def lengths(self, split: str) -> list[int]:
        return self._require()[split].lengths()  # type: ignore[union-attr]

    def stats(self):
        stats = super().stats()
        stats["tokens"] = {split: self._require()[split].predicted + 1 for split in SPLITS}  # type: ignore[union-attr]
        stats["char_level"] = self.char_level
        return stats
