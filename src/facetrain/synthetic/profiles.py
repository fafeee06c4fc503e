"""Per-image nuisance (pose, lighting, expression, age, image quality) and per-benchmark profiles.

A profile says how the two images of a verification pair differ (e.g. cfp_fp: one frontal, one near
profile; calfw/agedb_30: a large age gap; lfw: mild), and how the training images vary (a bit of
everything, so a model learns the invariances the benchmarks test).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Occluder:
    kind: str  # "mask" (lower face), "sunglasses", "hand" (a skin-coloured blob), "block"
    colour: tuple[float, float, float]
    x: float  # position/size in face half-sizes, meaning depends on kind
    y: float
    size: float


@dataclass(frozen=True)
class Nuisance:
    yaw: float = 0.0  # degrees, + turns the features to the image right
    roll: float = 0.0  # degrees of residual in-plane rotation after alignment
    scale: float = 1.0  # residual scale after alignment
    shift: tuple[float, float] = (0.0, 0.0)  # residual translation after alignment, pixels
    gaze: tuple[float, float] = (0.0, 0.0)  # iris offset, fraction of the eye size
    mouth_open: float = 0.0  # 0..1
    smile: float = 0.0  # -0.5 (frown) .. 1
    brow_raise: float = 0.0  # 0..1
    age: float = 0.0  # 0..1: greying, wrinkles, wider face
    light_angle: float = 0.0  # radians, direction the light comes from
    light_strength: float = 0.0  # 0 flat .. 0.7 strong side light
    brightness: float = 1.0
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel (BGR) gains
    background: tuple[tuple[float, float, float], tuple[float, float, float]] = ((128, 128, 128), (128, 128, 128))
    background_texture: float = 0.0  # amplitude of low-frequency blotches
    clothes: tuple[float, float, float] = (90, 90, 90)
    occluder: Occluder | None = None
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int = 95


@dataclass(frozen=True)
class Profile:
    """Ranges a nuisance is drawn from. Yaw ranges are of |yaw| (sign drawn); `yaw_second` is for the
    second image of a verification pair (and `age_gap` is the age difference within a pair)."""

    yaw: tuple[float, float] = (0.0, 30.0)
    yaw_second: tuple[float, float] | None = None
    roll: float = 6.0
    scale: float = 0.06
    shift: float = 3.0
    age: tuple[float, float] = (0.0, 0.4)
    age_gap: tuple[float, float] | None = None
    light: float = 0.45
    blur: float = 1.0
    noise: float = 5.0
    jpeg: tuple[int, int] = (50, 95)
    occlusion_p: float = 0.06
    hard_negatives: bool = False  # negatives are the most similar of a few candidates


PROFILES: dict[str, Profile] = {
    "train": Profile(yaw=(0.0, 50.0), age=(0.0, 1.0)),
    "lfw": Profile(yaw=(0.0, 25.0), age=(0.0, 0.5), age_gap=(0.0, 0.2)),
    "cfp_ff": Profile(yaw=(0.0, 12.0), yaw_second=(0.0, 12.0)),
    "cfp_fp": Profile(yaw=(0.0, 12.0), yaw_second=(40.0, 60.0)),
    "cplfw": Profile(yaw=(0.0, 35.0), yaw_second=(20.0, 50.0), hard_negatives=True),
    "calfw": Profile(yaw=(0.0, 20.0), age=(0.0, 0.3), age_gap=(0.4, 0.8), hard_negatives=True),
    "agedb_30": Profile(yaw=(0.0, 20.0), age=(0.0, 0.5), age_gap=(0.3, 0.6)),
    # mixed quality, like IJB: stronger blur, noise and compression, any pose
    "ijb": Profile(yaw=(0.0, 60.0), age=(0.0, 0.6), blur=2.0, noise=10.0, jpeg=(30, 90), occlusion_p=0.1),
    # four synthetic groups for the fairness metrics, harder by construction from a to d: clean frontal
    # pairs; mild pose and age; a large pose gap within pairs; a large pose gap, look-alike impostors and
    # poorer images
    "group_a": Profile(yaw=(0.0, 8.0), yaw_second=(0.0, 8.0), blur=0.5, noise=2.0, occlusion_p=0.0),
    "group_b": Profile(yaw=(0.0, 25.0), age=(0.0, 0.5), age_gap=(0.0, 0.2)),
    "group_c": Profile(yaw=(0.0, 15.0), yaw_second=(40.0, 60.0)),
    "group_d": Profile(yaw=(0.0, 15.0), yaw_second=(40.0, 60.0), hard_negatives=True, blur=2.0, noise=10.0),
}
GROUP_NAMES = ("group_a", "group_b", "group_c", "group_d")
BENCHMARK_NAMES = ("lfw", "cfp_fp", "cfp_ff", "cplfw", "calfw", "agedb_30")

_OCCLUDERS = ("mask", "sunglasses", "hand", "block")


def _colour(rng: np.random.Generator, lo: float = 0, hi: float = 255) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(lo, hi, 3))


def sample_nuisance(profile: Profile, rng: np.random.Generator, yaw_range: tuple[float, float] | None = None,
                    age: float | None = None) -> Nuisance:
    """Draw one image's nuisance from `profile` (optionally forcing the |yaw| range and the age)."""
    lo, hi = yaw_range or profile.yaw
    yaw = float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))
    occluder = None
    if rng.uniform() < profile.occlusion_p:
        kind = str(rng.choice(_OCCLUDERS))
        occluder = Occluder(kind, _colour(rng), float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.6, 0.8)),
                            float(rng.uniform(0.25, 0.5)))
    bg_a = np.asarray(_colour(rng))
    bg_b = np.clip(bg_a + rng.normal(0, 60, 3), 0, 255)
    return Nuisance(
        yaw=yaw,
        roll=float(rng.uniform(-profile.roll, profile.roll)),
        scale=float(1.0 + rng.uniform(-profile.scale, profile.scale)),
        shift=(float(rng.uniform(-profile.shift, profile.shift)), float(rng.uniform(-profile.shift, profile.shift))),
        gaze=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.15, 0.15))),
        mouth_open=float(max(0.0, rng.uniform(-0.5, 1.0))),
        smile=float(rng.uniform(-0.5, 1.0)),
        brow_raise=float(max(0.0, rng.uniform(-0.5, 1.0))),
        age=float(rng.uniform(*profile.age) if age is None else np.clip(age, 0.0, 1.0)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(0, profile.light)),
        brightness=float(rng.uniform(0.75, 1.25)),
        colour_cast=tuple(float(g) for g in rng.uniform(0.92, 1.08, 3)),
        background=(tuple(float(c) for c in bg_a), tuple(float(c) for c in bg_b)),
        background_texture=float(rng.uniform(0, 35)),
        clothes=_colour(rng, 20, 235),
        occluder=occluder,
        blur_sigma=float(max(0.0, rng.uniform(-0.3, profile.blur))),
        noise_sigma=float(rng.uniform(0, profile.noise)),
        jpeg_quality=int(rng.integers(profile.jpeg[0], profile.jpeg[1] + 1)),
    )


def sample_pair_nuisance(profile: Profile, rng: np.random.Generator) -> tuple[Nuisance, Nuisance]:
    """Nuisances of the two images of a pair: pose and age differences follow the profile."""
    first = sample_nuisance(profile, rng)
    age = None
    if profile.age_gap is not None:
        age = first.age + rng.uniform(*profile.age_gap)
    second = sample_nuisance(profile, rng, yaw_range=profile.yaw_second, age=age)
    if rng.uniform() < 0.5:  # which member is frontal / younger is not fixed
        first, second = second, first
    return first, second
