"""Errors that the CLI reports as one line (`error: ...`) with exit code 1, instead of a traceback."""


class FacetrainError(Exception):
    """Base class: an expected failure whose message is meant for the user."""


class DataError(FacetrainError, ValueError):
    """Unreadable, truncated or malformed input data; the message names the file (and record)."""


class ConfigError(FacetrainError, ValueError):
    """Invalid combination of options or an unusable checkpoint/config."""
