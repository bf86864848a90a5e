"""Readers for labelled text files; every problem with a file is a one-line ``DataError`` naming it."""

from __future__ import annotations

from pathlib import Path

from normbench.errors import DataError

_SHOW = 60


def _shown(text: str) -> str:
    """A line as the user should see it in an error: repr'd and truncated, so tabs and CRs are visible."""
    return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file (a BOM is dropped); a missing, empty or undecodable file is a ``DataError``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: data file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {err.start})") from None


def text_lines(text: str) -> list[str]:
    r"""Lines without their ends (LF or CRLF); a final line end does not make an empty last line.

    Splits on ``"\n"`` only: ``str.splitlines()`` would also break at U+2028, ``\x85``, ``\x0c`` inside a line.
    """
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]


def read_text_file(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (see ``read_text`` and ``text_lines``)."""
    return text_lines(read_text(path))


def read_mr_snippets(path: str | Path) -> list[tuple[str, int]]:
    """Read ``id<TAB>score<TAB>text`` lines (Hutto & Gilbert 2014 snippets) as ``(text, label)``.

    ``score > 0`` is label 1, ``score < 0`` label 0; neutral (``== 0``) lines are dropped because the
    task is binary polarity. CRLF endings and a missing final newline are accepted, as in the real file.
    """
    path = Path(path)
    examples: list[tuple[str, int]] = []
    for lineno, line in enumerate(text_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(
                f"{path}:{lineno}: expected 3 tab-separated fields id<TAB>score<TAB>text, "
                f"found {len(fields)}: {_shown(line)}"
            )
        _, score_text, sentence = fields
        try:
            score = float(score_text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: score is not a number: {_shown(score_text)}") from None
        if score != score:  # NaN has no polarity
            raise DataError(f"{path}:{lineno}: score is not a number: {_shown(score_text)}")
        sentence = sentence.strip()
        if score == 0 or not sentence:
            continue
        examples.append((sentence, int(score > 0)))
    if not examples:
        raise DataError(f"{path}: no usable rows (every line neutral or blank)")
    labels = {label for _, label in examples}
    if len(labels) < 2:
        only = "positive" if labels == {1} else "negative"
        raise DataError(f"{path}: only one class present ({only}); need both positive and negative scores")
    return examples
