"""Margin heads: forward(embeddings, norms, labels) -> scaled logits; cross-entropy is applied outside."""
from __future__ import annotations

from facetrain.errors import ConfigError
from facetrain.heads.adaface import AdaFace
from facetrain.heads.arcface import ArcFace
from facetrain.heads.base import MarginHead
from facetrain.heads.cosface import CosFace

HEADS: dict[str, type[MarginHead]] = {"adaface": AdaFace, "arcface": ArcFace, "cosface": CosFace}


def build_head(
    name: str,
    embedding_size: int,
    class_num: int,
    m: float | None = None,
    h: float | None = None,
    s: float | None = None,
    t_alpha: float | None = None,
) -> MarginHead:
    """A head with the given hyper-parameters; None keeps that head's own default.

    `h` and `t_alpha` only mean something to AdaFace and are ignored by the other heads,
    so one command line can drive every head.
    """
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; choose one of: {', '.join(HEADS)}")
    given = {"m": m, "s": s}
    if name == "adaface":
        given.update(h=h, t_alpha=t_alpha)
    return HEADS[name](embedding_size, class_num, **{k: v for k, v in given.items() if v is not None})


__all__ = ["AdaFace", "ArcFace", "CosFace", "HEADS", "MarginHead", "build_head"]
