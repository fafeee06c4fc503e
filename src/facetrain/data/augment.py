"""AdaFace's training augmentations on uint8 BGR 112x112 faces, with cv2 and uint8 arithmetic.

Each fires independently with its probability, in AdaFace's order: crop (a RandomResizedCrop box pasted
back at the same place on a black canvas, not resized), low resolution (down then up), photometric
(brightness, contrast, saturation in random order, like torchvision's ColorJitter), then a horizontal
flip. All randomness comes from the `np.random.Generator` passed in, so a worker seeded per sample
reproduces its batches exactly.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# torchvision's RandomResizedCrop defaults as AdaFace uses them
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# AdaFace draws the down- and the up-sampling interpolation independently from this list
INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
JITTER = 0.5  # ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0)


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale: tuple[float, float] = CROP_SCALE,
                            ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) by torchvision's `RandomResizedCrop.get_params` algorithm: up to 10 tries of
    a random area fraction and log-uniform aspect ratio, then a central crop clamped to `ratio`."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_paste(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep a random box in place and black out the rest (AdaFace's zero-padded crop)."""
    top, left, h, w = random_resized_crop_box(rng, img.shape[0], img.shape[1])
    out = np.zeros_like(img)
    out[top:top + h, left:left + w] = img[top:top + h, left:left + w]
    return out


def low_resolution(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to side ratio ~ U(0.2, 1) of the height (square, as AdaFace), then back up to the input size."""
    side = int(rng.uniform(0.2, 1.0) * img.shape[0])
    down = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
    up = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
    small = cv2.resize(img, (side, side), interpolation=down)
    return cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=up)


# Luminance weights of a BGR pixel (ITU-R 601, as cv2's BGR2GRAY and PIL's "L" conversion of RGB)
BGR_LUMA = np.array([0.114, 0.587, 0.299])
_IDENTITY, _LUMA_ROWS = np.eye(3), np.tile(BGR_LUMA, (3, 1))  # built once, not per image


def grey(img: np.ndarray) -> np.ndarray:
    """Luminance of a BGR image: 0.114 B + 0.587 G + 0.299 R (cv2's BGR2GRAY), uint8 HxW."""
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def adjust_brightness(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with black: img * factor, saturated to [0, 255]."""
    return cv2.convertScaleAbs(img, alpha=factor)


def adjust_contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean luminance (a uniform grey image), as torchvision does."""
    mean = float(np.dot(cv2.mean(img)[:3], BGR_LUMA))
    return cv2.addWeighted(img, factor, img, 0.0, (1.0 - factor) * mean)


def adjust_saturation(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's own luminance, in one per-pixel colour matrix (factor * I + (1 - factor) * luma).

    AdaFace runs torchvision's ColorJitter on its BGR array as if it were RGB, so its grey weights land on
    the wrong channels (0.299 on blue); here the weights match BGR."""
    matrix = factor * _IDENTITY + (1.0 - factor) * _LUMA_ROWS
    return cv2.transform(img, matrix)


def photometric(img: np.ndarray, rng: np.random.Generator, jitter: float = JITTER) -> np.ndarray:
    """ColorJitter(brightness, contrast, saturation = jitter, hue = 0): the order of the three is a random
    permutation and each factor is ~ U(1 - jitter, 1 + jitter), drawn before any is applied."""
    order = rng.permutation(4)  # torchvision permutes four ops; hue (3) is off
    factors = rng.uniform(max(0.0, 1.0 - jitter), 1.0 + jitter, 3)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation)
    for op in order:
        if op < 3:
            img = ops[op](img, float(factors[op]))
    return img


class Augmenter:
    """`Augmenter(crop_p, low_res_p, photometric_p)(bgr, rng) -> bgr`, all uint8 HxWx3.

    `swap_color_channel` reverses the channel order of the input before augmenting, as AdaFace's
    `--swap_color_channel` does to the decoded sample (for images whose channels are stored swapped).
    """

    def __init__(self, crop_p: float, low_res_p: float, photometric_p: float, flip_p: float = 0.5,
                 swap_color_channel: bool = False):
        for name, p in (("crop_p", crop_p), ("low_res_p", low_res_p), ("photometric_p", photometric_p),
                        ("flip_p", flip_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Augmenter: {name} must be a probability in [0, 1], got {p}")
        self.crop_p, self.low_res_p, self.photometric_p, self.flip_p = crop_p, low_res_p, photometric_p, flip_p
        self.swap_color_channel = swap_color_channel
        self._thresholds = np.array([crop_p, low_res_p, photometric_p, flip_p])

    def __call__(self, bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if self.swap_color_channel else bgr
        # one uniform per augmentation, always drawn, so the stream does not depend on which fired
        fire = (rng.uniform(size=4) < self._thresholds).tolist()
        if fire[0]:
            img = crop_paste(img, rng)
        if fire[1]:
            img = low_resolution(img, rng)
        if fire[2]:
            img = photometric(img, rng)
        if fire[3]:
            img = cv2.flip(img, 1)
        return np.ascontiguousarray(img)

    def __repr__(self) -> str:
        return (f"Augmenter(crop_p={self.crop_p}, low_res_p={self.low_res_p}, photometric_p={self.photometric_p}, "
                f"flip_p={self.flip_p}, swap_color_channel={self.swap_color_channel})")
