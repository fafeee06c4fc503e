"""The published sizes of the verification sets people report on: (pairs, genuine pairs) per set.

LFW, AgeDB-30, CALFW, CPLFW: 6,000 pairs in 10 folds of 300 genuine + 300 impostor; CFP-FP and
CFP-FF: 7,000 pairs (10 folds of 350 + 350); each RFW group: 6,000 pairs (10 folds of 300 + 300).
The InsightFace `.bin` copies hold exactly these pairs, two images each.
"""
from __future__ import annotations

PUBLISHED_PAIRS: dict[str, tuple[int, int]] = {
    "lfw": (6000, 3000),
    "agedb_30": (6000, 3000),
    "calfw": (6000, 3000),
    "cplfw": (6000, 3000),
    "cfp_fp": (7000, 3500),
    "cfp_ff": (7000, 3500),
    **{group: (6000, 3000) for group in ("African", "Asian", "Caucasian", "Indian")},
}


def published_for(name: str) -> tuple[int, int] | None:
    """The published (pairs, genuine) of a set named like a benchmark (`lfw`, `African_test`), else None."""
    for key in (name, name.removesuffix("_test")):
        if key in PUBLISHED_PAIRS:
            return PUBLISHED_PAIRS[key]
    return None


def count_verdict(name: str, pairs: int, genuine: int) -> dict:
    """{"expected": (pairs, genuine) or None, "ok": bool or None, "message": str}."""
    expected = published_for(name)
    if expected is None:
        return {"expected": None, "ok": None, "message": f"{pairs} pairs ({genuine} genuine); no published size for {name!r}"}
    ok = (pairs, genuine) == expected
    message = (f"{pairs} pairs ({genuine} genuine), as published" if ok else
               f"{pairs} pairs ({genuine} genuine) where {name} has {expected[0]} ({expected[1]} genuine): "
               "truncated, padded or another set")
    return {"expected": list(expected), "ok": ok, "message": message}
