"""Errors that the CLI reports as one line (`error: ...`) with exit code 1, instead of a traceback."""


class FacetrainError(Exception):
    """Base class: an expected failure whose message is meant for the user."""


class DataError(FacetrainError, ValueError):
    """Unreadable, truncated or malformed input data; the message names the file (and record)."""


class ConfigError(FacetrainError, ValueError):
    """Invalid combination of options or an unusable checkpoint/config."""


def one_line(exc: BaseException) -> str:
    """What the CLI prints after `error: `: the message of an expected failure (FacetrainError), the
    file and reason of a refused file-system operation (OSError), else the exception's type and
    message; flattened to one line whatever it quotes (torch's own errors span several)."""
    if isinstance(exc, FacetrainError):
        text = str(exc)
    elif isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        what = exc.strerror or str(exc)
        text = f"{where}: {what}" if where else what
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
