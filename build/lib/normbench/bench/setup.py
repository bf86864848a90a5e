"""What every benchmark starts from: the project's own config (composed by Hydra from ``conf/``), the
default data (the cached MR file, or a generated file in the same format), and the device."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from normbench.data.classification import resolve_cache_dir
from normbench.data.mr import FILE_NAME
from normbench.errors import ConfigError
from normbench.run.train import DEFAULT_CONFIG_DIR

_SYLLABLES = "ba be bi bo bu da de di do du ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu ra re ri ro ru"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, exactly as ``python train.py <overrides>`` composes it."""
    from hydra import compose
    from hydra.errors import HydraException

    from normbench.cli.schemas import composing

    try:
        with composing(DEFAULT_CONFIG_DIR):
            return compose("train", overrides=list(overrides))
    except HydraException as err:
        raise ConfigError(f"bench config overrides {list(overrides)}: {str(err).splitlines()[0]}") from None


def write_mr_fixture(path: Path, lines: int = 10_568, seed: int = 0) -> Path:
    """A file in the MR snippet format (``id<TAB>score<TAB>text``, CRLF) with made-up words and snippet
    lengths like the real ones (3-50 words, mean about 19), for machines without the cached data set."""
    rng = random.Random(seed)
    syllables = _SYLLABLES.split()
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(12_000)})
    out = []
    for i in range(1, lines + 1):
        count = min(50, max(3, int(rng.lognormvariate(2.85, 0.5))))
        score = rng.uniform(0.2, 3.5) * rng.choice((-1, 1))
        out.append(f"{i}\t{score:.6f}\t{' '.join(rng.choices(words, k=count))}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\r\n".join(out).encode("utf-8"))
    return path


def data_overrides(data_path: str | None, out_dir: Path) -> tuple[list[str], str]:
    """Overrides that point the default task at its data without any download: ``data_path`` if given,
    else the cached MR file if present, else a generated fixture in ``out_dir``. Returns them and a label."""
    if data_path:
        return [f"data.path={Path(data_path).resolve()}"], f"file {data_path}"
    cached = resolve_cache_dir(None) / "data" / FILE_NAME
    if cached.is_file():
        return [], f"cached MR ({cached})"
    fixture = out_dir / "fixture" / FILE_NAME
    if not fixture.is_file():
        write_mr_fixture(fixture)
    return [f"data.path={fixture}"], f"generated MR-format fixture ({fixture})"


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device={name!r} is unknown; accepted: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but torch sees no CUDA device; accepted here: cpu, auto")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()})"


def fixed_batches(datamodule, count: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """The first ``count`` training batches of epoch 0 (the order every run of the seed sees), on ``device``."""
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(tuple(t.to(device) for t in batch))
        if len(batches) == count:
            break
    return batches
