"""data=local: csv/tsv/jsonl classification and plain-text language modeling, and one-line errors naming the file."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from cli import train
from conftest import data_config
from hydra.utils import instantiate

from normbench.data.local import LocalClassificationDataModule, LocalTextDataModule, local_datamodule
from normbench.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
GOOD, BAD = ["great", "superb", "lovely"], ["awful", "dull", "boring"]


def rows(n: int = 120, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = ["pos", "neg", "meh"][i % 3]
        word = {"pos": rng.choice(GOOD), "neg": rng.choice(BAD), "meh": "fine"}[label]
        out.append((f'the film, "{word}", is {word} {i}', label))
    return out


def write(path: Path, fmt: str, data: list[tuple[str, str]], text: str = "text", label: str = "label") -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({text: t, label: y, "id": i}) + "\n" for i, (t, y) in enumerate(data)))
    else:
        import csv

        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(["id", text, label])
            writer.writerows([i, t, y] for i, (t, y) in enumerate(data))
    return path


def _make(path: Path, **kwargs):
    return local_datamodule(str(path), batch_size=8, vocab_size=200, **kwargs)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_tables_become_classification_with_named_labels(fmt: str, tmp_path: Path) -> None:
    data = rows()
    dm = _make(write(tmp_path / f"d.{fmt}", fmt, data))
    assert isinstance(dm, LocalClassificationDataModule) and dm.task == "classification"
    dm.setup()
    assert dm.label_names == ["meh", "neg", "pos"] and dm.num_classes == 3
    stats = dm.stats()
    assert (stats["num_train"], stats["num_val"], stats["num_test"]) == (96, 12, 12)
    texts = {t for t, _ in data}
    assert len(dm.load_examples()) == 120 and {t for t, _ in dm.load_examples()} == texts  # quotes, commas intact
    tokens, mask, target = next(iter(dm.train_dataloader()))
    assert tokens.shape[0] == 8 and int(target.max()) <= 2


def test_other_column_names_and_numeric_labels(tmp_path: Path) -> None:
    data = [(t, str(10 if y == "pos" else 2 if y == "neg" else 9)) for t, y in rows()]
    dm = _make(write(tmp_path / "d.csv", "csv", data, "review", "stars"), text_column="review", label_column="stars")
    dm.setup()
    assert dm.label_names == ["2", "9", "10"]  # numeric order, not "10" < "2"


def test_plain_text_becomes_language_modeling_in_contiguous_parts(tmp_path: Path) -> None:
    lines = [f"line {i:03d}: the quick brown fox" for i in range(200)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    dm = _make(path, seq_len=16)
    assert isinstance(dm, LocalTextDataModule) and dm.task == "lm" and dm.char_level
    parts = dm.load_lines()
    assert parts["train"] + parts["val"] + parts["test"] == lines
    assert parts["val"][0] == "line 160: the quick brown fox" and len(parts["test"]) == 20
    dm.setup()
    assert dm.stats()["max_len"] == 16


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        (
            "d.csv",
            b"id,txt,label\n1,a,x\n2,b,y\n",
            {},
            r"no column 'text' \(data.text_column\); columns: id, txt, label",
        ),
        ("d.tsv", b"text\tlab\na\tx\n", {}, r"no column 'label' \(data.label_column\); columns: text, lab"),
        ("d.jsonl", b'{"text": "a", "y": 1}\n', {}, r"no column 'label' \(data.label_column\); columns: text, y"),
        ("d.csv", b"text,label\na,x\nb,y\n", {"text_column": "body"}, r"no column 'body'"),
        ("d.csv", b"", {}, "data file is empty"),
        ("d.txt", b"\n \n", {}, "data file is empty"),
        ("d.csv", b"text,label\n", {}, "no rows"),
        ("d.csv", b"text,label\ncaf\xe9,x\n", {}, r"not UTF-8 text \(bad byte at offset 14\)"),
        ("d.txt", b"\xff\xfeh\x00i\x00", {}, "not UTF-8 text"),
        ("d.csv", b"text,label\na,same\nb,same\nc,same\n", {}, "every row has the label 'same'; .* at least 2 labels"),
        ("d.jsonl", b'{"text": "a", "label": 1}\n[1, 2]\n', {}, r":2: expected a JSON object per line, got list"),
        ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": \n', {}, r":2: not valid JSON"),
        ("d.csv", b"text,label\na,x\nb\n", {}, r":3: the row has fewer fields than the header \(2\)"),
        ("missing.csv", None, {}, "data file not found"),
    ],
)
def test_file_problems_are_one_line_naming_the_file(tmp_path: Path, name, content, kwargs, message) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + message) as info:
        _make(path, **kwargs).setup()
    assert "\n" not in str(info.value)


def test_config_problems_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data=local needs data.path=<file>"):
        local_datamodule(None)
    with pytest.raises(ConfigError, match=r"cannot tell the format from '.dat'.*set data.format"):
        local_datamodule(str(tmp_path / "x.dat"))
    with pytest.raises(ConfigError, match=r"data.format='xml' is unknown; accepted: auto, csv, tsv, jsonl, text"):
        local_datamodule(str(tmp_path / "x.csv"), format="xml")
    path = write(tmp_path / "x.dat", "tsv", rows())
    assert isinstance(local_datamodule(str(path), format="tsv"), LocalClassificationDataModule)


def test_config_instantiates(tmp_path: Path) -> None:
    cfg = data_config("local")
    cfg.path, cfg.shuffle_seed = str(write(tmp_path / "d.jsonl", "jsonl", rows())), 0
    dm = instantiate(cfg)
    dm.setup()
    assert dm.num_classes == 3 and dm.batch_size == 32


@pytest.mark.slow
def test_cli_on_a_local_csv_and_a_bad_column(tmp_path: Path) -> None:
    path = write(tmp_path / "reviews.csv", "csv", rows(300))
    run = tmp_path / "run"
    args = ["data=local", f"data.path={path}", "logger=none", "callbacks=none", "trainer.max_epochs=4", "optim.lr=3e-3"]
    train([*args, f"hydra.run.dir={run}"], tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["val/acc"] > 0.8 and results["data_stats"]["labels"] == ["meh", "neg", "pos"]
    proc = train([*args, "data.label_column=stars", f"hydra.run.dir={tmp_path / 'bad'}"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {path}: no column 'stars' (data.label_column); columns: id, text, label" in proc.stderr
