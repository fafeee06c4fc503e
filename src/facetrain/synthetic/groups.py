"""Pair sets per group in RFW's release layout, for the fairness metrics: four synthetic groups whose
difficulty differs by construction (see `profiles.GROUP_NAMES`: clean frontal pairs; mild pose and age; a
40-60 degree pose gap; that gap with look-alike impostors and poorer images), so tests know the ordering the
metrics must find. The groups
are synthetic faces: their order says nothing about any real population.

Layout (read by `facetrain eval --rfw OUT/rfw`): `rfw/test/data/<group>/<identity>/<identity>_<NNNN>.jpg`
(aligned 112x112) and `rfw/test/txts/<group>/<group>_pairs.txt` in LFW's format, each of the 10 folds
its genuine pairs first, then its impostor pairs, as RFW's files are.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facetrain.errors import ConfigError
from facetrain.io_utils import write_bytes
from facetrain.synthetic.profiles import GROUP_NAMES
from facetrain.synthetic.splits import render_pairs

FOLDS = 10


def _fold_order(issame: np.ndarray) -> np.ndarray:
    """Pair indices so that each contiguous fold lists its genuine pairs, then its impostor pairs."""
    genuine, impostor = np.flatnonzero(issame), np.flatnonzero(~issame)
    per_fold = len(issame) // FOLDS // 2
    order = []
    for k in range(FOLDS):
        order += [*genuine[k * per_fold:(k + 1) * per_fold], *impostor[k * per_fold:(k + 1) * per_fold]]
    return np.array(order, dtype=np.int64)


def check_pairs_per_group(pairs_per_group: int) -> None:
    if pairs_per_group < 2 * FOLDS or pairs_per_group % (2 * FOLDS):
        raise ConfigError(f"pairs per group must be a multiple of {2 * FOLDS} (10 folds, half genuine), got {pairs_per_group}")


def write_group_sets(root: Path, seed: int, pairs_per_group: int, workers: int = 1) -> dict:
    """Write the release layout under `root/test` (a fresh folder); returns the summary."""
    check_pairs_per_group(pairs_per_group)
    summary = {}
    for group in GROUP_NAMES:
        images, issame, plan = render_pairs(seed, group, pairs_per_group, workers=workers)
        lines, counts = [], {}
        for k in _fold_order(issame):
            names = []
            for member in (0, 1):
                identity = f"m.{group[-1]}{plan[k, member]:05d}"
                counts[identity] = counts.get(identity, 0) + 1
                folder = root / "test" / "data" / group / identity
                folder.mkdir(parents=True, exist_ok=True)
                data = cv2.imencode(".jpg", images[2 * k + member], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                write_bytes(folder / f"{identity}_{counts[identity]:04d}.jpg", data)
                names.append((identity, counts[identity]))
            (a, na), (b, nb) = names
            lines.append(f"{a}\t{na}\t{nb}" if issame[k] else f"{a}\t{na}\t{b}\t{nb}")
        txts = root / "test" / "txts" / group
        txts.mkdir(parents=True)
        write_bytes(txts / f"{group}_pairs.txt", ("\n".join(lines) + "\n").encode())
        summary[group] = {"pairs": pairs_per_group, "genuine": int(issame.sum()), "identities": int(len(np.unique(plan)))}
    return {"root": "rfw/test", "groups": summary}
