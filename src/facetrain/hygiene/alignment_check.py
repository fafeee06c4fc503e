"""Are the 112x112 faces aligned to the ArcFace template? Detect five landmarks on a sample (the AdaFace
cascade, on the face padded by 40 black pixels so that a face filling the crop is still found) and
compare them with the template.

MTCNN's landmarks on an aligned crop scatter by a few pixels, so the verdict rests on the sample's mean
landmarks, where that noise averages out: a similarity fit from the template onto them gives the
systematic offset (x, y) and scale s. |offset| <= 2 px and |s - 1| <= 5 %: "aligned to the ArcFace
112x112 template"; otherwise, when the faces still agree with each other (median distance to the fitted
template <= 6 px) and sit where a face template puts them (|offset| <= 16 px, 0.75 <= s <= 1.33):
"aligned to another template (offset x, y, scale s)", e.g. 96x112 crops widened differently; else
"not aligned" (loose crops, or faces at one place and size no face template uses). Mean and p95 of the per-image distance (pixels, mean over the five
points) to the ArcFace template are reported too.
"""
from __future__ import annotations

import cv2
import numpy as np

from facetrain.alignment.mtcnn import MTCNN
from facetrain.geometry.similarity import TEMPLATE_112, estimate_similarity

PAD = 40
OFFSET_PX, SCALE_TOLERANCE, CONSISTENT_PX = 2.0, 0.05, 6.0
OTHER_TEMPLATE_OFFSET_PX, OTHER_TEMPLATE_SCALES = 16.0, (0.75, 1.33)


def detect_landmarks(images_bgr: np.ndarray, detector: MTCNN) -> tuple[np.ndarray, int]:
    """((found, 5, 2) landmarks in the images' pixels, number of images where no face was found)."""
    found, missed = [], 0
    for image in images_bgr:
        padded = cv2.copyMakeBorder(np.ascontiguousarray(image), PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
        _, scores, landmarks = detector.detect(padded, channels="bgr")
        if len(scores) == 0:
            missed += 1
            continue
        found.append(landmarks[int(np.argmax(scores))] - PAD)
    return np.array(found, np.float64).reshape(-1, 5, 2), missed


def alignment_verdict(landmarks: np.ndarray, missed: int = 0) -> dict:
    """The verdict (see the module) of detected (N, 5, 2) landmarks."""
    checked = len(landmarks) + missed
    if len(landmarks) == 0:
        return {"verdict": "no face found in the sample", "sample": checked, "found": 0}
    template = TEMPLATE_112.astype(np.float64)
    per_image = np.linalg.norm(landmarks - template, axis=2).mean(axis=1)
    fit = estimate_similarity(template, landmarks.mean(axis=0))  # template -> where the faces are
    scale = float(np.sqrt(abs(np.linalg.det(fit[:, :2]))))
    moved = template @ fit[:, :2].T + fit[:, 2]
    offset = (moved - template).mean(axis=0)
    spread = float(np.median(np.linalg.norm(landmarks - moved, axis=2).mean(axis=1)))
    if np.abs(offset).max() <= OFFSET_PX and abs(scale - 1.0) <= SCALE_TOLERANCE:
        verdict = "aligned to the ArcFace 112x112 template"
    elif (spread <= CONSISTENT_PX and np.abs(offset).max() <= OTHER_TEMPLATE_OFFSET_PX
          and OTHER_TEMPLATE_SCALES[0] <= scale <= OTHER_TEMPLATE_SCALES[1]):
        verdict = f"aligned to another template (offset {offset[0]:+.1f}, {offset[1]:+.1f} px, scale {scale:.3f})"
    else:
        verdict = (f"not aligned (faces offset {offset[0]:+.1f}, {offset[1]:+.1f} px, scale {scale:.3f}, scattered "
                   f"{spread:.1f} px around their mean)")
    return {"verdict": verdict, "sample": checked, "found": len(landmarks),
            "mean_distance_px": float(per_image.mean()), "p95_distance_px": float(np.percentile(per_image, 95)),
            "offset_px": [float(offset[0]), float(offset[1])], "scale": scale, "spread_px": spread}


def check_alignment(images_bgr: np.ndarray, sample: int = 64, seed: int = 0, detector: MTCNN | None = None) -> dict:
    """The alignment verdict of up to `sample` images drawn (seeded) from `images_bgr` (N, 112, 112, 3)."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(images_bgr), size=min(sample, len(images_bgr)), replace=False))
    landmarks, missed = detect_landmarks(np.stack([images_bgr[i] for i in index]), detector or MTCNN())
    return alignment_verdict(landmarks, missed)
