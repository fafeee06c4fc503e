"""Weights & Biases for `--use_wandb`: checked before the run folder is touched, started by the logger.

The run's W&B id is kept in RUN/wandb/facetrain-run-id, so a run resumed in its folder continues the
same W&B run (W&B drops the re-logged steps up to its last one: the same values, an exact resume logs
them again); a new or --overwrite'n folder starts a new one.
"""
from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_write_bytes

WANDB_DIR = "wandb"
WANDB_ID_NAME = "facetrain-run-id"  # in RUN/wandb/: the W&B run a resume continues
# what we write (12 hex digits) and what W&B accepts, without its reserved characters or whitespace
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OFFLINE_HINT = "or log to disk with WANDB_MODE=offline (`wandb sync` uploads later)"


def _id_file(output_dir: Path) -> Path:
    return output_dir / WANDB_DIR / WANDB_ID_NAME


def read_run_id(output_dir: Path) -> str | None:
    """The W&B id a run in `output_dir` continues; None for a new W&B run. ConfigError for a file that
    holds no id (empty, binary, another tool's), so a resume never starts a stray W&B run."""
    path = _id_file(output_dir)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        data = f.read(256)
    text = data.decode("ascii", errors="replace").strip()
    if not _RUN_ID.fullmatch(text):
        raise ConfigError(f"{path}: holds no W&B run id ({'empty' if not text else 'letters, digits, - and _ only'});"
                          " delete it to log this run as a new W&B run")
    return text


def check_wandb(output_dir: Path, overwrite: bool) -> None:
    """ConfigError, before anything is written, when `--use_wandb` cannot start: an unreadable run id to
    continue (a run folder kept, not --overwrite'n), or online mode without credentials (W&B would
    prompt or fail after the run folder exists). Without wandb installed there is nothing to check."""
    try:
        import wandb
    except ImportError:
        return
    if not overwrite:
        read_run_id(output_dir)
    settings = wandb.setup().settings
    if settings.mode in ("offline", "dryrun", "disabled"):
        return
    try:
        logged_in = wandb.login(prompt=False, verify=False)
    except wandb.errors.Error as exc:  # e.g. a malformed WANDB_API_KEY
        raise ConfigError(f"--use_wandb: {exc}; {_OFFLINE_HINT}") from None
    if not logged_in:
        raise ConfigError(f"--use_wandb: no W&B API key (set WANDB_API_KEY or run `wandb login`), {_OFFLINE_HINT}")


def start_wandb(output_dir: Path, project: str, config: dict[str, Any] | None):
    """A W&B run named after the run folder, as AdaFace's WandbLogger; None when wandb is not installed
    (config_from_args has warned). A W&B run that does not start (no network, a refused key) is a
    ConfigError, and the RUN/wandb/ folder this call made is removed."""
    try:
        import wandb
    except ImportError:
        return None
    folder = output_dir / WANDB_DIR
    made = not folder.exists()
    run_id = read_run_id(output_dir)
    if run_id is None:
        run_id = secrets.token_hex(6)  # W&B ids: letters and digits
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(_id_file(output_dir), f"{run_id}\n".encode())
    try:
        return wandb.init(project=project, name=output_dir.name, dir=str(output_dir), config=config, id=run_id,
                          resume="allow", reinit=True)
    except wandb.errors.Error as exc:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--use_wandb: W&B did not start ({reason}); {_OFFLINE_HINT}") from None

