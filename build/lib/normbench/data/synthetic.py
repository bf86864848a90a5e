"""Synthetic controls, generated from a seed (no download): ListOps, parity, associative recall.

Why: each isolates one thing a sequence model must do (compose a tree, count over the whole sequence,
retrieve by content), and the length distribution is a config value, so the padding share and the
sequence length, which is what breaks batch statistics, can be swept alone. Lengths are drawn uniformly
from ``[max_len - spread * (max_len - min_len), max_len]``: ``spread=0`` gives equal lengths (no
padding), ``spread=1`` the full range ``[min_len, max_len]``.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

import torch

from normbench.data.base import SequenceDataModule, positive_int
from normbench.errors import ConfigError

Tokens = list[str]
SPECIALS = ["[PAD]", "[UNK]"]  # ids 0 and 1, as in every trained tokenizer


def sample_lengths(rng: random.Random, n: int, min_len: int, max_len: int, spread: float) -> list[int]:
    """``n`` lengths, uniform on ``[max_len - spread * (max_len - min_len), max_len]``."""
    low = max_len - round(spread * (max_len - min_len))
    return [rng.randint(low, max_len) for _ in range(n)]


# --- ListOps (Nangia & Bowman 2018; the Long Range Arena version of Tay et al. 2021) -------------

LISTOPS_OPS: dict[str, Callable[[list[int]], int]] = {
    "[MAX": max,
    "[MIN": min,
    "[MED": lambda values: int(statistics.median(values)),  # LRA: int(np.median), so even counts round down
    "[SM": lambda values: sum(values) % 10,
}
LISTOPS_SYMBOLS = [*LISTOPS_OPS, "]", *map(str, range(10))]


def _arg_lengths(rng: random.Random, inner: int, max_args: int) -> list[int]:
    """Lengths of the arguments of one operator, summing to ``inner``; each is 1 (a digit) or >= 3 (a list)."""
    choices = [k for k in range(1, min(max_args, inner) + 1) if inner - k != 1]
    k = rng.choice(choices)
    lengths = [1] * k
    extra = inner - k  # 0 or >= 2: handed out in chunks of >= 2 so no argument has length 2
    if extra:
        grown = rng.sample(range(k), rng.randint(1, min(k, extra // 2)))
        cuts = sorted(rng.randint(0, extra - 2 * len(grown)) for _ in range(len(grown) - 1))
        shares = [b - a for a, b in zip([0, *cuts], [*cuts, extra - 2 * len(grown)], strict=True)]
        for arg, share in zip(grown, shares, strict=True):
            lengths[arg] += 2 + share
    return lengths


def listops_expression(rng: random.Random, length: int, max_args: int = 10) -> tuple[Tokens, int]:
    """A random ListOps expression of exactly ``length`` tokens (1, or >= 3) and its value 0-9.

    ``[MAX 2 9 [MIN 4 7 ] 0 ]`` is 8 tokens with value 9; operators take 1..``max_args`` arguments.
    """
    if length == 1:
        digit = rng.randrange(10)
        return [str(digit)], digit
    if length == 2:
        raise ValueError("no ListOps expression has 2 tokens")
    op = rng.choice(list(LISTOPS_OPS))
    tokens, values = [op], []
    for arg_len in _arg_lengths(rng, length - 2, max_args):
        arg_tokens, value = listops_expression(rng, arg_len, max_args)
        tokens += arg_tokens
        values.append(value)
    return [*tokens, "]"], LISTOPS_OPS[op](values)


def listops_value(tokens: Tokens) -> int:
    """Evaluate a ListOps expression (the reference the generator is tested against)."""
    stack: list[list[Any]] = [[]]
    for token in tokens:
        if token in LISTOPS_OPS:
            stack.append([token])
        elif token == "]":
            op, *values = stack.pop()
            stack[-1].append(LISTOPS_OPS[op](values))
        else:
            stack[-1].append(int(token))
    return stack[0][0]


# --- parity and associative recall ---------------------------------------------------------------


def parity_example(rng: random.Random, length: int) -> tuple[Tokens, int]:
    """Random bits; the label is their parity (1 if the count of ones is odd)."""
    bits = [rng.randrange(2) for _ in range(length)]
    return [str(b) for b in bits], sum(bits) % 2


def recall_example(rng: random.Random, length: int, num_keys: int, num_values: int) -> tuple[Tokens, int]:
    """Associative recall (Ba et al. 2016): ``k3 v1 k0 v7 ... ? k0`` -> 7, the value last bound to the queried key.

    ``(length - 2) // 2`` key-value pairs (keys may repeat), then ``?`` and a key that occurred; an odd
    length starts with one ``.`` so every length is exact.
    """
    pairs = (length - 2) // 2
    keys = [rng.randrange(num_keys) for _ in range(pairs)]
    values = [rng.randrange(num_values) for _ in range(pairs)]
    query = rng.choice(keys)
    answer = next(v for k, v in zip(reversed(keys), reversed(values), strict=True) if k == query)
    tokens = ["."] * (length % 2) + [t for k, v in zip(keys, values, strict=True) for t in (f"k{k}", f"v{v}")]
    return [*tokens, "?", f"k{query}"], answer


# --- the datamodules -----------------------------------------------------------------------------


class SyntheticDataModule(SequenceDataModule):
    """A classification task generated from ``data_seed`` (independent of the training seed).

    Subclasses define ``symbols``, ``num_classes``, the shortest length they can make, and ``example``.
    """

    task = "classification"
    symbols: list[str]
    shortest: int = 1

    def __init__(
        self,
        num_train: int = 8000,
        num_val: int = 1000,
        num_test: int = 1000,
        min_len: int = 16,
        max_len: int = 128,
        spread: float = 1.0,
        data_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sizes = {
            "train": positive_int("num_train", num_train),
            "val": positive_int("num_val", num_val),
            "test": positive_int("num_test", num_test),
        }
        self.min_len = positive_int("min_len", min_len, self.shortest)
        self.max_len = positive_int("max_len", max_len, self.min_len)
        if isinstance(spread, bool) or not isinstance(spread, int | float) or not 0.0 <= spread <= 1.0:
            raise ConfigError(f"data.spread={spread!r} is out of range; accepted: a number in [0, 1]")
        self.spread = float(spread)
        self.data_seed = data_seed
        self.ids = {symbol: i for i, symbol in enumerate([*SPECIALS, *self.symbols])}

    def example(self, rng: random.Random, length: int) -> tuple[Tokens, int]:
        raise NotImplementedError

    def build_splits(self) -> dict[str, list[tuple[torch.Tensor, int]]]:
        splits = {}
        for index, (split, size) in enumerate(self.sizes.items()):
            rng = random.Random(f"{type(self).__name__}-{self.data_seed}-{index}")
            examples = []
            for length in sample_lengths(rng, size, self.min_len, self.max_len, self.spread):
                tokens, label = self.example(rng, length)
                examples.append((torch.tensor([self.ids[t] for t in tokens], dtype=torch.long), label))
            splits[split] = examples
        return splits

    @property
    def vocab_size(self) -> int:
        return len(self.ids)

    @property
    def pad_id(self) -> int:
        return 0


class ListOpsDataModule(SyntheticDataModule):
    """ListOps: the value (0-9) of a nested MAX/MIN/MED/SUM_MOD expression, tokens in prefix form."""

    symbols = LISTOPS_SYMBOLS
    num_classes = 10
    shortest = 3

    def __init__(self, max_args: int = 10, **kwargs: Any) -> None:
        self.max_args = positive_int("max_args", max_args)
        super().__init__(**kwargs)

    def example(self, rng: random.Random, length: int) -> tuple[Tokens, int]:
        return listops_expression(rng, length, self.max_args)


class ParityDataModule(SyntheticDataModule):
    """Parity of a bit string: needs every token, so it cannot be solved from a part of the sequence."""

    symbols = ["0", "1"]
    num_classes = 2

    def example(self, rng: random.Random, length: int) -> tuple[Tokens, int]:
        return parity_example(rng, length)


class RecallDataModule(SyntheticDataModule):
    """Associative recall: the value bound to a queried key, classified among ``num_values`` values."""

    shortest = 4

    def __init__(self, num_keys: int = 16, num_values: int = 10, **kwargs: Any) -> None:
        self.num_keys = positive_int("num_keys", num_keys)
        self.num_values = positive_int("num_values", num_values, 2)
        self.symbols = [".", "?", *(f"k{k}" for k in range(num_keys)), *(f"v{v}" for v in range(num_values))]
        super().__init__(**kwargs)

    @property
    def num_classes(self) -> int:
        return self.num_values

    def example(self, rng: random.Random, length: int) -> tuple[Tokens, int]:
        return recall_example(rng, length, self.num_keys, self.num_values)
