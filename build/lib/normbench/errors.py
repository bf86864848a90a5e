"""User-facing errors.

Anything a user can get wrong (a config value, a data file, a batch too small for batch statistics)
raises a `NormbenchError` whose message is one line naming the bad value and what is accepted;
`train.py` prints that line and exits non-zero instead of showing a torch stack trace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: exit code of a run stopped by a user error (Hydra's own failures exit with 1)
USER_ERROR_EXIT = 2


class NormbenchError(Exception):
    """An error caused by the user's input, reported as one line."""


class ConfigError(NormbenchError, ValueError):
    """A config value is unknown or out of range."""


class DataError(NormbenchError, ValueError):
    """A dataset file is missing, empty or malformed, or could not be obtained."""


class BatchStatisticsError(NormbenchError, ValueError):
    """A batch-statistic norm got too few real values per channel to compute a variance."""


class NonFiniteError(NormbenchError, FloatingPointError):
    """The loss or a gradient became NaN/inf; the message names the step and the layer."""


class JobsFailedError(NormbenchError):
    """Jobs of a multirun failed; each one's results.json says ``status: failed`` with its error."""


def one_line(err: BaseException) -> str:
    """``Type: message`` on one line, every line of the message kept (Hydra's wrappers put the reason on
    the second line: "Error in call to target 'X':" / "ZeroDivisionError(...)")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {' '.join(lines)}"


#: where Lightning's own code lives: a ValueError raised there is Lightning checking an argument it was given
_LIGHTNING_PACKAGE = f"{os.sep}lightning{os.sep}"


def _raised_in_lightning(err: BaseException) -> bool:
    """Whether ``err`` is a refusal of Lightning's: a ``MisconfigurationException``, or a ``ValueError`` raised
    by Lightning's own code (it checks Trainer arguments against the data only in ``fit``, e.g.
    ``val_check_interval`` longer than the epoch)."""
    if any(cls.__name__ == "MisconfigurationException" for cls in type(err).__mro__):
        return True
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return isinstance(err, ValueError) and frame is not None and _LIGHTNING_PACKAGE in frame.tb_frame.f_code.co_filename


def _causes(err: BaseException | None) -> list[BaseException]:
    chain = []
    while err is not None:
        chain.append(err)
        err = err.__cause__
    return chain


def _ours(err: BaseException | None) -> NormbenchError | None:
    """The `NormbenchError` in ``err``'s chain of causes, if any."""
    return next((e for e in _causes(err) if isinstance(e, NormbenchError)), None)


def user_error(err: BaseException | None) -> NormbenchError | None:
    """The `NormbenchError` behind ``err``, if any: Hydra's ``instantiate`` wraps errors raised in
    constructors (``data.batch_size=0``) in its own exception, with the user's error as the cause.
    Lightning refusing a Trainer argument (``_raised_in_lightning``) is a user error too."""
    ours = _ours(err)
    if ours is not None:
        return ours
    refused = next((e for e in _causes(err) if _raised_in_lightning(e)), None)
    return ConfigError(f"Lightning refused the config: {one_line(refused)}") if refused else None


@contextmanager
def instantiating(section: str) -> Iterator[None]:
    """Around Hydra's ``instantiate`` of a config section: a constructor that refuses its arguments (Hydra's
    ``InstantiationException`` around the reason) becomes one `ConfigError` naming the section and the reason."""
    try:
        yield
    except Exception as err:
        if _ours(err) is not None or type(err).__name__ != "InstantiationException":
            raise
        reason = one_line(err.__cause__) if err.__cause__ is not None else one_line(err)
        target = str(err).splitlines()[0].removeprefix("Error in call to target ").rstrip(":")
        raise ConfigError(f"{section}: cannot build {target} from this config: {reason}") from err


@contextmanager
def user_errors_as_one_line() -> Iterator[None]:
    """A user error inside becomes ``error: <message>`` on stderr and exit code 2, not a stack trace;
    with ``HYDRA_FULL_ERROR=1`` it is re-raised after that line, for the trace."""
    try:
        yield
    except Exception as err:
        shown = user_error(err)
        if shown is None:
            raise
        print(f"error: {shown}", file=sys.stderr, flush=True)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(USER_ERROR_EXIT)
