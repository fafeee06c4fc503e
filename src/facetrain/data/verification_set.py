"""A verification set: 2N aligned faces where pair i is (images[2i], images[2i+1]) and issame[i] says genuine."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facetrain.errors import DataError

# The five high-quality sets reported in the literature, in AdaFace's order; cfp_ff is used when present.
VAL_SET_NAMES: tuple[str, ...] = ("lfw", "cfp_fp", "cplfw", "calfw", "agedb_30")
IMAGE_SHAPE: tuple[int, int, int] = (112, 112, 3)


@dataclass
class VerificationSet:
    name: str
    images: np.ndarray  # (2N,112,112,3) uint8 BGR; may be a read-only memmap
    issame: np.ndarray  # (N,) bool

    def __post_init__(self) -> None:
        self.issame = np.asarray(self.issame, dtype=bool).reshape(-1)
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
