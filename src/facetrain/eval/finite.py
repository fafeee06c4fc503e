"""One refusal for every path that turns a model's output into a number: NaN/inf features would score as
something (50 %, or 100 % where every comparison ties) instead of saying the model is broken."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from facetrain.errors import ConfigError


def model_label(model: object) -> str:
    """How errors name a model: the file it was loaded from (`load_backbone` records it), else its architecture."""
    return str(getattr(model, "source", None) or getattr(model, "arch", None) or type(model).__name__)


def refuse_non_finite(arrays: Iterable[np.ndarray | torch.Tensor | None], model: object, what: str) -> None:
    """ConfigError naming the model when any row of the (N, D) arrays holds NaN or inf."""
    bad, total = None, 0
    for array in arrays:
        if array is None:
            continue
        rows = ~(torch.isfinite(array).reshape(len(array), -1).all(dim=1).cpu().numpy() if isinstance(array, torch.Tensor)
                 else np.isfinite(array).reshape(len(array), -1).all(axis=1))
        bad = rows if bad is None else bad | rows
        total = len(rows)
    if bad is not None and bad.any():
        raise ConfigError(f"{model_label(model)}: the model gives non-finite (NaN/inf) embeddings for {int(bad.sum())} "
                          f"of {total} {what}: its weights are corrupt or training diverged")


def refuse_non_finite_weights(model: torch.nn.Module) -> None:
    """ConfigError naming the model and its first tensor holding NaN or inf (an export would ship them)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConfigError(f"{model_label(model)}: weight {name} holds NaN/inf values: the checkpoint is corrupt "
                              "or training diverged")
