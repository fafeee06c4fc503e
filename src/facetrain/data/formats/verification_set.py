"""A verification set: 2N aligned faces where pair i is (images[2i], images[2i+1]) and issame[i] says genuine."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facetrain.errors import DataError

# The five high-quality sets reported in the literature, in AdaFace's order; cfp_ff is used when present.
VAL_SET_NAMES: tuple[str, ...] = ("lfw", "cfp_fp", "cplfw", "calfw", "agedb_30")
IMAGE_SHAPE: tuple[int, int, int] = (112, 112, 3)
# The 10-fold protocol scores each fold with a threshold chosen on the other nine: fewer pairs have no folds.
MIN_PAIRS = 10


def check_issame(issame: object, source: str) -> np.ndarray:
    """The (N,) bool labels of a verification set, or a DataError naming `source`: one label per pair
    (a 1-D list), each exactly 0/1 or a bool, and both genuine and impostor pairs (with one kind only,
    accuracy and TAR are numbers without meaning: every threshold looks perfect or none does)."""
    labels = np.asarray(issame)
    if labels.ndim != 1:
        raise DataError(f"{source}: issame must be a list of one label per pair, got an array of shape {labels.shape}")
    if labels.dtype != bool:
        if labels.dtype.kind not in "iuf":
            raise DataError(f"{source}: issame holds {labels.dtype} values, expected booleans (or 0/1)")
        odd = np.flatnonzero((labels != 0) & (labels != 1))
        if len(odd):
            raise DataError(f"{source}: issame label {odd[0]} is {labels[odd[0]].item()!r}; labels are 1 (genuine) or 0 "
                            f"(impostor), {len(odd)} of {len(labels)} are not")
        labels = labels.astype(bool)
    genuine = int(labels.sum())
    if genuine == 0 or genuine == len(labels):
        raise DataError(f"{source}: {len(labels)} pairs, {genuine} genuine and {len(labels) - genuine} impostor: "
                        "a verification set needs both kinds of pair")
    return labels


@dataclass
class VerificationSet:
    name: str
    images: np.ndarray  # (2N,112,112,3) uint8 BGR; may be a read-only memmap
    issame: np.ndarray  # (N,) bool

    def __post_init__(self) -> None:
        self.issame = check_issame(self.issame, self.name)
        if self.images.ndim != 4 or self.images.shape[1:] != IMAGE_SHAPE or self.images.dtype != np.uint8:
            raise DataError(
                f"{self.name}: expected images of shape (2N,112,112,3) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if len(self.images) != 2 * len(self.issame):
            raise DataError(
                f"{self.name}: {len(self.images)} images for {len(self.issame)} pairs (expected exactly 2 per pair)"
            )

    @property
    def num_pairs(self) -> int:
        return len(self.issame)

    @property
    def num_genuine(self) -> int:
        return int(self.issame.sum())

    def summary(self) -> dict:
        return {"images": len(self.images), "pairs": self.num_pairs, "genuine": self.num_genuine,
                "impostor": self.num_pairs - self.num_genuine}
