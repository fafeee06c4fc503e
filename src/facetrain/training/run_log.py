"""The run's own log: what training prints goes to the console (through tqdm, so progress bars stay
intact) and, with its warnings, to `train.log` in the run folder (rank 0)."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from tqdm import tqdm

LOG_NAME = "train.log"
log = logging.getLogger("facetrain.training")


class _TqdmConsole(logging.Handler):
    """INFO lines to stdout without breaking a progress bar (warnings reach the console as warnings)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            tqdm.write(self.format(record))


class RunLog:
    """Attach the console and `output_dir/train.log` to the training logger; `close()` detaches them."""

    def __init__(self, output_dir: Path, enabled: bool = True):
        self.handlers: list[logging.Handler] = []
        if not enabled:
            return
        # a file name that is not UTF-8 is logged as its own bytes (see io_utils.encode_text)
        file = logging.FileHandler(output_dir / LOG_NAME, encoding="utf-8", errors="surrogateescape")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.handlers = [_TqdmConsole(), file]
        for handler in self.handlers:
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False

    def close(self) -> None:
        for handler in self.handlers:
            log.removeHandler(handler)
            handler.close()
        self.handlers = []


def warn(message: str) -> None:
    """A training warning: raised as a Python warning (tests and callers can catch it) and kept in train.log."""
    warnings.warn(message, stacklevel=3)
    log.warning(message)
