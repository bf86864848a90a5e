"""User-facing errors.

Anything a user can get wrong (a config value, a data file, a batch too small for batch statistics)
raises a `NormbenchError` whose message is one line naming the bad value and what is accepted;
`train.py` prints that line and exits non-zero instead of showing a torch stack trace.
"""


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
