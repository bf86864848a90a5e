"""Shared fixtures: a small, learnable file in the exact MR snippet format (written here, no network)."""

import random
from pathlib import Path

import pytest

POSITIVE = ["wonderful", "moving", "brilliant", "delightful", "gripping", "superb", "charming", "funny"]
NEGATIVE = ["dull", "tedious", "awful", "boring", "clumsy", "lifeless", "pointless", "bland"]
FILLER = [
    "the",
    "film",
    "is",
    "a",
    "movie",
    "with",
    "its",
    "story",
    "and",
    "cast",
    "plot",
    "director",
    "script",
    "scenes",
    "that",
    "this",
    "one",
]


def write_mr_snippets(path: Path, n: int = 600, seed: int = 0) -> Path:
    """``id<TAB>score<TAB>text`` lines with CRLF endings, as in movieReviewSnippets_GroundTruth.txt.

    The polarity is carried by one or two sentiment words among random filler, so a working
    model learns it in a few epochs and a broken one stays at chance.
    """
    rng = random.Random(seed)
    lines = []
    for i in range(1, n + 1):
        positive = rng.random() < 0.5
        words = rng.choices(FILLER, k=rng.randint(3, 14))
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if positive else NEGATIVE))
        score = rng.uniform(0.5, 3.5) * (1 if positive else -1)
        lines.append(f"{i}\t{score:.11f}\t{' '.join(words).capitalize()}.")
    lines.insert(5, f"{n + 1}\t0.0\tA neutral line that is dropped.")
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    return path


@pytest.fixture
def mr_file(tmp_path: Path) -> Path:
    return write_mr_snippets(tmp_path / "movieReviewSnippets_GroundTruth.txt")


def data_config(name: str):
    """``conf/data/<name>.yaml`` as the composed config holds it (with the shared loader keys it extends)."""
    from hydra import compose
    from omegaconf import OmegaConf

    from normbench.cli.schemas import composing

    with composing(Path(__file__).resolve().parents[1] / "conf"):
        cfg = compose("train", overrides=[f"data={name}"])
    return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
