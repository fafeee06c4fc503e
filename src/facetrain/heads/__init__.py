"""Heads: a classifier (class centres) and a margin (how the true-class logit changes).

`build_head` gives the whole single-process head, forward(embeddings, norms, labels) -> scaled
logits; `build_margin` gives the margin alone, for classifiers that hold the centres differently
(Partial FC). Cross-entropy is applied outside.
"""
from __future__ import annotations

from facetrain.errors import ConfigError
from facetrain.heads.adaface import AdaFaceMargin
from facetrain.heads.arcface import ArcFaceMargin
from facetrain.heads.cosface import CosFaceMargin
from facetrain.heads.head import AdaFace, ArcFace, CosFace, MarginHead
from facetrain.heads.margin import Margin

MARGINS: dict[str, type[Margin]] = {"adaface": AdaFaceMargin, "arcface": ArcFaceMargin, "cosface": CosFaceMargin}
HEADS: dict[str, type[MarginHead]] = {"adaface": AdaFace, "arcface": ArcFace, "cosface": CosFace}


def _settings(name: str, m: float | None, h: float | None, s: float | None, t_alpha: float | None) -> dict:
    """The hyper-parameters given for head `name`; None keeps that head's own default. `h` and
    `t_alpha` only mean something to AdaFace and are ignored by the others, so one command line can
    drive every head."""
    if name not in MARGINS:
        raise ConfigError(f"unknown head {name!r}; choose one of: {', '.join(MARGINS)}")
    given = {"m": m, "s": s}
    if name == "adaface":
        given.update(h=h, t_alpha=t_alpha)
    return {k: v for k, v in given.items() if v is not None}


def build_margin(name: str, m: float | None = None, h: float | None = None, s: float | None = None,
                 t_alpha: float | None = None) -> Margin:
    """The margin alone, for classifiers that hold the class centres themselves (Partial FC)."""
    return MARGINS[name](**_settings(name, m, h, s, t_alpha))


def build_head(name: str, embedding_size: int, class_num: int, m: float | None = None, h: float | None = None,
               s: float | None = None, t_alpha: float | None = None) -> MarginHead:
    """The whole head: every class centre in this process, with that head's margin."""
    settings = _settings(name, m, h, s, t_alpha)
    return HEADS[name](embedding_size, class_num, **settings)


__all__ = ["AdaFace", "AdaFaceMargin", "ArcFace", "ArcFaceMargin", "CosFace", "CosFaceMargin", "HEADS", "MARGINS",
           "Margin", "MarginHead", "build_head", "build_margin"]
