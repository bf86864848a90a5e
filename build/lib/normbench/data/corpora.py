"""Standard corpora: read from a local directory of the usual files, or through HF ``datasets`` when online.

Language modeling: ``wikitext2``, ``wikitext103`` (``wiki.{train,valid,test}.tokens``), ``ptb`` (Mikolov's
``ptb.{train,valid,test}.txt``) and ``ptb_char`` (``ptb.char.{train,valid,test}.txt``). Classification:
``imdb`` (the ``aclImdb/{train,test}/{pos,neg}/*.txt`` tree), ``ag_news`` (``train.csv``/``test.csv``:
class 1-4, title, description) and ``sst2`` (GLUE ``train.tsv``/``dev.tsv``; dev is the test split, as
GLUE's test labels are hidden). Corpora without a validation split get one carved from training with
``data.split_seed``. ``datasets`` is optional (``pip install 'normbench[hf]'``) and imported only when
no ``data.path`` is given.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from normbench.data.classification import Example, TextClassificationDataModule, carve_validation
from normbench.data.language_modeling import LanguageModelingDataModule
from normbench.data.text_files import read_text, text_lines
from normbench.errors import DataError

SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}


def load_hf_split(name: str, dataset: str, config: str | None, split: str) -> Any:
    """One split of a Hugging Face dataset; a one-line ``DataError`` when ``datasets`` or the network is missing."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"data={name} without data.path needs the Hugging Face datasets library (pip install 'normbench[hf]') "
            "and a network connection; or pass data.path=<directory with the standard files>"
        ) from None
    try:
        return datasets.load_dataset(dataset, config, split=split)
    except Exception as err:  # noqa: BLE001  (network, hub and cache errors all end the same way)
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise DataError(
            f"data={name}: could not load {dataset}{'/' + config if config else ''} [{split}] through datasets "
            f"({reason}); pass data.path=<directory with the standard files>"
        ) from None


def _in_dir(directory: Path, name: str, what: str) -> Path:
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory (data.path must hold the {what})")
    path = directory / name
    if not path.is_file():
        raise DataError(f"{path}: not found (data.path must hold the {what})")
    return path


# --- language modeling ---------------------------------------------------------------------------


class LocalOrHubCorpus(LanguageModelingDataModule):
    """An LM corpus with official train/valid/test files; ``path`` is their directory, else the HF hub."""

    files = "{split}"  # file name pattern of a split, ``{split}`` = train | valid | test
    hub: tuple[str, str | None, str] = ("", None, "text")  # dataset, config, text column

    def __init__(self, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser() if path else None

    def _hub_lines(self, split: str) -> list[str]:
        dataset, config, column = self.hub
        rows = load_hf_split(self.name or dataset, dataset, config, "validation" if split == "valid" else split)
        return [str(text).removesuffix("\n") for text in rows[column]]

    def load_lines(self) -> dict[str, list[str]]:
        lines = {}
        for split, official in SPLIT_NAMES.items():
            if self.path is None:
                lines[split] = self.convert(self._hub_lines(official))
            else:
                file = _in_dir(self.path, self.files.format(split=official), f"files {self.files}")
                lines[split] = text_lines(read_text(file))
        return lines

    def convert(self, lines: list[str]) -> list[str]:
        """Hub lines in the format of the standard files (identity unless a subclass says otherwise)."""
        return lines


class WikiText2DataModule(LocalOrHubCorpus):
    """WikiText-2 (Merity et al. 2016), word level as published (``<unk>`` for rare words)."""

    files = "wiki.{split}.tokens"
    hub = ("Salesforce/wikitext", "wikitext-2-v1", "text")


class WikiText103DataModule(WikiText2DataModule):
    """WikiText-103: the same format, 50x the training text."""

    hub = ("Salesforce/wikitext", "wikitext-103-v1", "text")


class PTBDataModule(LocalOrHubCorpus):
    """Penn Treebank as preprocessed by Mikolov et al. (10k words, ``<unk>``, no punctuation)."""

    files = "ptb.{split}.txt"
    hub = ("ptb_text_only", "penn_treebank", "sentence")


class PTBCharDataModule(LocalOrHubCorpus):
    """Penn Treebank characters (Mikolov's ``ptb.char.*.txt``): one symbol per token, ``_`` between words."""

    files = "ptb.char.{split}.txt"
    hub = ("ptb_text_only", "penn_treebank", "sentence")

    @property
    def char_level(self) -> bool:
        return True  # the whitespace tokenizer's tokens are single characters here

    def convert(self, lines: list[str]) -> list[str]:
        return [" _ ".join(" ".join(word) for word in line.split()) for line in lines]


# --- classification ------------------------------------------------------------------------------


class CorpusClassification(TextClassificationDataModule):
    """A classification corpus with official train and test splits (and a validation split carved from train)."""

    def __init__(self, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser() if path else None

    def read_local(self, split: str) -> list[Example]:
        """``split`` (train | test) from the standard files under ``self.path``."""
        raise NotImplementedError

    def read_hub(self, split: str) -> list[Example]:
        raise NotImplementedError

    def load_split_examples(self) -> tuple[list[Example], list[Example], list[Example]]:
        read = self.read_hub if self.path is None else self.read_local
        train, test = read("train"), read("test")
        train, val = carve_validation(train, self.split, self.split_seed)
        return train, val, test


class IMDBDataModule(CorpusClassification):
    """IMDB movie-review polarity (Maas et al. 2011): 25k training and 25k test reviews."""

    def read_local(self, split: str) -> list[Example]:
        root = self.path / "aclImdb" if (self.path / "aclImdb").is_dir() else self.path  # type: ignore[operator]
        examples = []
        for label, polarity in enumerate(("neg", "pos")):
            folder = root / split / polarity
            if not folder.is_dir():
                raise DataError(f"{folder}: not found (data.path must hold aclImdb/{{train,test}}/{{pos,neg}}/*.txt)")
            # <br /> line breaks are markup of the original pages, not text
            examples += [(read_text(f).replace("<br />", " "), label) for f in sorted(folder.glob("*.txt"))]
        return examples

    def read_hub(self, split: str) -> list[Example]:
        rows = load_hf_split("imdb", "stanfordnlp/imdb", None, split)
        return [
            (text.replace("<br />", " "), int(label)) for text, label in zip(rows["text"], rows["label"], strict=True)
        ]


class AGNewsDataModule(CorpusClassification):
    """AG News topic classification (Zhang et al. 2015): 4 classes, title and description."""

    def read_local(self, split: str) -> list[Example]:
        path = _in_dir(self.path, f"{split}.csv", "train.csv and test.csv")  # type: ignore[arg-type]
        examples = []
        for lineno, row in enumerate(csv.reader(io.StringIO(read_text(path), newline="")), start=1):
            if len(row) != 3 or not row[0].strip().isdigit():
                raise DataError(f"{path}:{lineno}: expected class index (1-4), title, description; got {row[:3]}")
            title, description = (field.replace("\\n", " ").replace("\\", " ") for field in row[1:])
            examples.append((f"{title}. {description}", int(row[0]) - 1))
        return examples

    def read_hub(self, split: str) -> list[Example]:
        rows = load_hf_split("ag_news", "fancyzhx/ag_news", None, split)
        return list(zip(rows["text"], map(int, rows["label"]), strict=True))


class SST2DataModule(CorpusClassification):
    """SST-2 sentence polarity (Socher et al. 2013, GLUE): train 67k phrases; GLUE dev (872) is the test split."""

    def read_local(self, split: str) -> list[Example]:
        name = "train.tsv" if split == "train" else "dev.tsv"
        path = _in_dir(self.path, name, "GLUE SST-2 train.tsv and dev.tsv")  # type: ignore[arg-type]
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
        if not {"sentence", "label"} <= set(reader.fieldnames or []):
            raise DataError(f"{path}: expected the header sentence<TAB>label, got {reader.fieldnames}")
        return [(row["sentence"], int(row["label"])) for row in reader]

    def read_hub(self, split: str) -> list[Example]:
        rows = load_hf_split("sst2", "stanfordnlp/sst2", None, "train" if split == "train" else "validation")
        return list(zip(rows["sentence"], map(int, rows["label"]), strict=True))
