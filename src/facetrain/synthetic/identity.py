"""A synthetic identity: the parameters that stay fixed across all of a person's images.

Every attribute has a large spread between identities (face and feature geometry, skin tone, eye
and hair colour, hair style, glasses, moles, beard) so that a network can learn to tell people
apart, while the per-image nuisance of `profiles.Nuisance` dominates raw pixel distances.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Skin tones (BGR) from dark to light; an identity interpolates between neighbours.
_SKIN_TONES = np.array(
    [[45, 65, 95], [60, 90, 135], [80, 120, 170], [100, 145, 200], [125, 170, 225], [160, 200, 240]],
    dtype=np.float64,
)
# Hair colours (BGR): black, dark brown, brown, auburn, blond, ginger, grey.
_HAIR_COLOURS = np.array(
    [[20, 20, 25], [25, 40, 60], [40, 70, 110], [30, 50, 130], [90, 170, 210], [40, 90, 190], [150, 150, 150]],
    dtype=np.float64,
)
# Iris colours (BGR): dark brown, brown, hazel, green, blue, grey-blue.
_IRIS_COLOURS = np.array(
    [[20, 40, 70], [30, 60, 110], [50, 110, 130], [70, 130, 60], [180, 120, 50], [150, 140, 110]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Identity:
    """Geometry is in the canonical 112x112 frame (before pose and alignment); colours are BGR."""

    face_width: float  # half width of the face ellipse
    face_height: float  # half height
    jaw: float  # 0 round .. 1 square-ish lower face
    skin: tuple[float, float, float]
    eye_spacing: float  # half distance between eye centres
    eye_y: float
    eye_width: float
    eye_height: float
    eye_tilt: float  # degrees, outer corners up (+) or down (-)
    iris: tuple[float, float, float]
    iris_size: float  # fraction of eye height
    brow_gap: float  # distance brow above eye
    brow_thickness: float
    brow_arch: float
    brow_length: float
    nose_y: float
    nose_width: float
    nose_bridge: float  # 0 thin .. 1 broad bridge shading
    mouth_y: float
    mouth_width: float
    lip_thickness: float
    lip_colour: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_volume: float  # how far the hair mass extends above/around the skull
    hairline: float  # forehead height covered by hair (0 high .. 1 low fringe)
    hair_part: float  # -1..1 asymmetry of the fringe
    long_hair: bool
    bald: bool
    ear_size: float
    glasses: int  # 0 none, 1 round, 2 rectangular
    glasses_colour: tuple[float, float, float]
    beard: float  # 0 none .. 1 full
    mole: tuple[float, float] | None  # position relative to the face centre, in face half-sizes

    def to_vector(self) -> np.ndarray:
        """Flat float vector (for picking look-alike negatives and for summaries)."""
        values: list[float] = []
        for value in asdict(self).values():
            if value is None:
                values += [0.0, 0.0]
            elif isinstance(value, (tuple, list)):
                values += [float(v) for v in value]
            else:
                values.append(float(value))
        return np.asarray(values)


def _palette(rng: np.random.Generator, table: np.ndarray, jitter: float) -> tuple[float, float, float]:
    """A colour between two neighbouring palette entries, plus a per-channel jitter."""
    t = rng.uniform(0, len(table) - 1)
    k = min(int(t), len(table) - 2)
    colour = table[k] * (1 - (t - k)) + table[k + 1] * (t - k) + rng.normal(0, jitter, 3)
    return tuple(float(c) for c in np.clip(colour, 0, 255))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity; all randomness comes from `rng` (deterministic given its seed)."""
    u = rng.uniform
    hair = _palette(rng, _HAIR_COLOURS, 12)
    glasses = int(rng.choice(3, p=[0.7, 0.15, 0.15]))
    return Identity(
        face_width=u(27, 38),
        face_height=u(40, 50),
        jaw=u(0, 1),
        skin=_palette(rng, _SKIN_TONES, 10),
        eye_spacing=u(14.5, 20.5),
        eye_y=u(48, 55),
        eye_width=u(6.5, 10.5),
        eye_height=u(2.8, 5.0),
        eye_tilt=u(-12, 12),
        iris=_palette(rng, _IRIS_COLOURS, 15),
        iris_size=u(0.55, 0.95),
        brow_gap=u(6, 12),
        brow_thickness=u(1.5, 4.5),
        brow_arch=u(-1, 4),
        brow_length=u(0.9, 1.5),
        nose_y=u(68, 76),
        nose_width=u(5, 11),
        nose_bridge=u(0, 1),
        mouth_y=u(88, 96),
        mouth_width=u(9, 17),
        lip_thickness=u(1.5, 5),
        lip_colour=_palette(rng, np.array([[70, 70, 150], [90, 90, 190], [110, 120, 200], [60, 60, 110]]), 10),
        hair=hair,
        hair_volume=u(2, 14),
        hairline=u(0, 1),
        hair_part=u(-1, 1),
        long_hair=bool(u() < 0.35),
        bald=bool(u() < 0.08),
        ear_size=u(6, 11),
        glasses=glasses,
        glasses_colour=_palette(rng, np.array([[10, 10, 10], [40, 60, 120], [160, 160, 160], [30, 30, 120]]), 10),
        beard=float(u(0.3, 1.0)) if u() < 0.2 else 0.0,
        mole=(float(u(-0.7, 0.7)), float(u(-0.3, 0.7))) if u() < 0.3 else None,
    )
