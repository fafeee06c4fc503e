"""Draw a face with OpenCV: an `Identity` seen under a `Nuisance`, aligned to the ArcFace template.

The face is laid out in a canonical 112x112 frame. Yaw moves every point horizontally by its depth
(x' = cx + (x - cx) cos(yaw) + z sin(yaw)); the 5 landmarks after yaw are aligned to TEMPLATE_112
by the same similarity transform a real pipeline would use, and the residual roll/scale/shift of the
nuisance plays the part of landmark-detector error. Every shape is drawn through that transform with
sub-pixel anti-aliased cv2 primitives (no warp, no per-pixel Python), so a loose crop of any size is
drawn natively by composing one more similarity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facetrain.geometry.similarity import TEMPLATE_112, estimate_similarity
from facetrain.synthetic.identity import Identity
from facetrain.synthetic.profiles import Nuisance

_SHIFT = 4  # cv2 fixed-point bits: coordinates are drawn with 1/16 pixel precision
_ONE = 1 << _SHIFT
_CX = 56.0  # vertical axis of the canonical face
_GREY_HAIR = np.array([175.0, 175.0, 180.0])


@dataclass(frozen=True)
class RenderedFace:
    image: np.ndarray  # uint8 BGR
    landmarks: np.ndarray  # (5, 2) float32: eyes, nose tip, mouth corners in `image` pixels


class _Canvas:
    """cv2 drawing through a 2x3 similarity `matrix` (canonical frame -> image pixels)."""

    def __init__(self, image: np.ndarray, matrix: np.ndarray):
        self.image = image
        self.matrix = matrix
        self.m = matrix.tolist()  # plain floats: single points are cheaper in Python than in numpy
        self.scale = float(math.hypot(matrix[0, 0], matrix[1, 0]))
        self.angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))

    def points(self, pts) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]

    def _fixed(self, pts) -> np.ndarray:
        return np.round(self.points(pts) * _ONE).astype(np.int32)

    def ellipse(self, centre, axes, colour, angle: float = 0.0, thickness: int = -1,
                start: float = 0.0, end: float = 360.0) -> None:
        (a, b, tx), (c, d, ty) = self.m
        x, y = centre
        fixed_centre = (round((a * x + b * y + tx) * _ONE), round((c * x + d * y + ty) * _ONE))
        ax = (max(1, round(axes[0] * self.scale * _ONE)), max(1, round(axes[1] * self.scale * _ONE)))
        cv2.ellipse(self.image, fixed_centre, ax, angle + self.angle, start, end, colour,
                    thickness, cv2.LINE_AA, _SHIFT)

    def polygon(self, pts, colour) -> None:
        cv2.fillPoly(self.image, [self._fixed(pts)], colour, cv2.LINE_AA, _SHIFT)

    def polyline(self, pts, colour, width: float, closed: bool = False) -> None:
        thickness = max(1, round(width * self.scale))
        cv2.polylines(self.image, [self._fixed(pts)], closed, colour, thickness, cv2.LINE_AA, _SHIFT)


def _mix(a, b, t: float) -> tuple[float, float, float]:
    return tuple(float(x) for x in np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t)


def _scaled(colour, gain: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, c * gain)) for c in colour)


class _Face:
    """The identity's geometry under the nuisance's yaw, expression and age (canonical frame)."""

    def __init__(self, ident: Identity, nz: Nuisance):
        self.id, self.nz = ident, nz
        yaw = math.radians(nz.yaw)
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        self.fw = ident.face_width * (1 + 0.07 * nz.age)
        self.fh = ident.face_height
        self.fcy = 20 + self.fh  # face top near y = 20
        hair = np.asarray(ident.hair)
        self.hair = _mix(hair, _GREY_HAIR, min(1.0, max(0.0, nz.age - 0.3) * 1.4))
        self.skin = ident.skin
        self.dark_skin = _scaled(ident.skin, 0.72)

    def depth(self, x: float, extra: float = 0.0) -> float:
        """Height of the face surface above the head's vertical axis plane at canonical x."""
        t = (x - _CX) / self.fw
        return 16.0 * math.sqrt(max(0.0, 1.0 - t * t)) + extra

    def p(self, x: float, y: float, extra_depth: float = 0.0) -> tuple[float, float]:
        """Project a point on the face surface (plus `extra_depth`, e.g. the nose) under yaw."""
        return (_CX + (x - _CX) * self.cos + self.depth(x, extra_depth) * self.sin, y)

    def facing(self, x: float) -> float:
        """Foreshortening of a small feature at canonical x (1 frontal, -> 0 as it turns away)."""
        t = max(-0.95, min(0.95, (x - _CX) / self.fw))
        normal = math.asin(t)  # the surface's own angle
        return max(0.15, math.cos(normal + math.radians(self.nz.yaw)) / max(0.3, math.cos(normal)))

    def landmarks(self) -> np.ndarray:
        ident, nz = self.id, self.nz
        mw = ident.mouth_width * (1 + 0.15 * nz.smile)
        my = ident.mouth_y - 2.5 * max(0.0, nz.smile)
        pts = [
            self.p(_CX - ident.eye_spacing, ident.eye_y),
            self.p(_CX + ident.eye_spacing, ident.eye_y),
            self.p(_CX, ident.nose_y, 9.0),
            self.p(_CX - mw, my),
            self.p(_CX + mw, my),
        ]
        return np.asarray(pts, dtype=np.float64)


def _draw_head(cv: _Canvas, f: _Face) -> None:
    ident, nz = f.id, f.nz
    head_x = _CX - 5.0 * f.sin  # the skull's centre moves opposite to the features
    # clothes and neck
    cv.ellipse((head_x, f.fcy + f.fh + 40), (f.fw * 2.1, 45), nz.clothes)
    cv.polygon([(head_x - f.fw * 0.5, f.fcy), (head_x + f.fw * 0.5, f.fcy),
                (head_x + f.fw * 0.6, 140), (head_x - f.fw * 0.6, 140)], f.dark_skin)
    if not ident.bald:
        if ident.long_hair:
            cv.polygon([(head_x - f.fw - ident.hair_volume, f.fcy - 10), (head_x + f.fw + ident.hair_volume, f.fcy - 10),
                        (head_x + f.fw + ident.hair_volume * 1.2, f.fcy + f.fh * 1.05),
                        (head_x - f.fw - ident.hair_volume * 1.2, f.fcy + f.fh * 1.05)], f.hair)
        cv.ellipse((head_x, f.fcy - f.fh * 0.25), (f.fw + ident.hair_volume * 0.6, f.fh * 0.8 + ident.hair_volume * 0.5),
                   f.hair)
    # ears: the one turned away is drawn now (the face covers it), the other after the face
    for side in (-1.0, 1.0):
        if side * f.sin >= -0.05:
            _draw_ear(cv, f, side)
    jaw_pts = _face_outline(f, head_x)
    cv.polygon(jaw_pts, f.skin)
    for side in (-1.0, 1.0):
        if side * f.sin < -0.05:
            _draw_ear(cv, f, side)


def _face_outline(f: _Face, head_x: float, n: int = 36) -> np.ndarray:
    """An ellipse whose lower half is pulled towards a rectangle by `jaw` (square vs. round chin)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = np.cos(t), np.sin(t)
    lower = y > 0
    power = 1.0 - 0.45 * f.id.jaw
    x = np.where(lower, np.sign(x) * np.abs(x) ** power, x)
    width = f.fw * (0.88 + 0.12 * abs(f.cos))
    return np.stack([head_x + width * x, f.fcy + f.fh * y], axis=1)


def _draw_ear(cv: _Canvas, f: _Face, side: float) -> None:
    x = _CX + side * f.fw
    ex = _CX + (x - _CX) * f.cos - 6.0 * f.sin
    size = f.id.ear_size
    cv.ellipse((ex, f.id.eye_y + 7), (size * 0.45 * max(0.35, abs(f.sin) + 0.3 * abs(f.cos)), size), f.dark_skin)
    cv.ellipse((ex, f.id.eye_y + 7), (size * 0.2, size * 0.6), _scaled(f.skin, 0.6))


def _draw_hair_front(cv: _Canvas, f: _Face) -> None:
    ident = f.id
    if ident.bald:
        return
    top = f.fcy - f.fh
    hairline_y = top + (ident.eye_y - ident.brow_gap - top) * (0.2 + 0.55 * ident.hairline)
    xs = np.linspace(_CX - f.fw * 1.02, _CX + f.fw * 1.02, 13)
    arc = []
    for x in xs:  # the top of the face outline, a little outside it
        t = (x - _CX) / (f.fw * 1.02)
        arc.append(f.p(x, f.fcy - f.fh * 1.03 * math.sqrt(max(0.0, 1 - t * t))))
    line = []
    for x in xs[::-1]:  # the hairline: lower at the sides, tilted by the parting
        t = (x - _CX) / f.fw
        y = hairline_y + 10 * t * t + 5 * ident.hair_part * t
        line.append(f.p(x, min(y, f.fcy - 4)))
    cv.polygon(arc + line, f.hair)


def _draw_eyes(cv: _Canvas, f: _Face) -> None:
    ident, nz = f.id, f.nz
    squint = 1.0 - 0.3 * max(0.0, nz.smile) + 0.15 * nz.brow_raise
    brow_colour = _scaled(f.hair, 0.7) if not ident.bald else _scaled(f.skin, 0.45)
    for side in (-1.0, 1.0):
        x = _CX + side * ident.eye_spacing
        k = f.facing(x)
        cx, cy = f.p(x, ident.eye_y)
        w, h = ident.eye_width * k, ident.eye_height * squint * (1 - 0.15 * nz.age)
        tilt = -side * ident.eye_tilt
        cv.ellipse((cx, cy), (w, h), (235, 240, 245), angle=tilt)
        r = ident.eye_height * ident.iris_size
        ix, iy = cx + nz.gaze[0] * w, cy + nz.gaze[1] * h
        cv.ellipse((ix, iy), (r * k, r), ident.iris)
        cv.ellipse((ix, iy), (r * 0.45 * k, r * 0.45), (15, 15, 15))
        cv.ellipse((cx, cy), (w, h), _scaled(f.skin, 0.45), angle=tilt, thickness=1, start=180, end=360)
        # brow: an arc above the eye
        by = ident.eye_y - ident.brow_gap - 3.0 * nz.brow_raise
        length = ident.eye_width * ident.brow_length
        bx = np.linspace(x - side * length * 0.8, x + side * length, 5)
        pts = [f.p(px, by - ident.brow_arch * (1 - ((px - x) / length) ** 2)) for px in bx]
        cv.polyline(pts, brow_colour, ident.brow_thickness * (1 - 0.3 * nz.age))


def _draw_nose_mouth(cv: _Canvas, f: _Face) -> None:
    ident, nz = f.id, f.nz
    shade = f.dark_skin
    half = ident.nose_width * 0.5 * f.facing(_CX)
    tip = f.p(_CX, ident.nose_y, 9.0)
    top_l = f.p(_CX - 2 - 2 * ident.nose_bridge, ident.eye_y + 2, 3.0)
    top_r = f.p(_CX + 2 + 2 * ident.nose_bridge, ident.eye_y + 2, 3.0)
    side = top_r if f.sin < 0 else top_l  # the bridge's shaded side faces away from the camera
    cv.polyline([side, (tip[0] - math.copysign(half * 0.6, f.sin or 1.0), tip[1] - 1)], shade, 1.2)
    cv.ellipse((tip[0], tip[1] - 1), (half * 0.8, half * 0.55), _scaled(f.skin, 0.9))
    for s in (-1.0, 1.0):
        cv.ellipse((tip[0] + s * half * 0.6, tip[1] + 1.2), (half * 0.35, half * 0.2), _scaled(f.skin, 0.4))
    if ident.beard > 0:
        top = ident.mouth_y - 6 - 6 * ident.beard
        xs = np.linspace(_CX - f.fw * 0.85, _CX + f.fw * 0.85, 9)
        lower = [f.p(x, f.fcy + f.fh * 0.98 * math.sqrt(max(0.0, 1 - ((x - _CX) / f.fw) ** 2))) for x in xs]
        upper = [f.p(x, top + 8 * abs((x - _CX) / f.fw)) for x in xs[::-1]]
        cv.polygon(lower + upper, _mix(f.skin, f.hair, 0.5 + 0.5 * ident.beard))
    if nz.age > 0.4:  # wrinkles: nasolabial folds and forehead lines
        wrinkle = _mix(f.skin, shade, min(1.0, (nz.age - 0.4) * 2.5))
        for s in (-1.0, 1.0):
            cv.polyline([f.p(_CX + s * (half + 2), ident.nose_y), f.p(_CX + s * (ident.mouth_width + 3), ident.mouth_y + 2)],
                        wrinkle, 1.0)
        for k in range(3):
            y = ident.eye_y - ident.brow_gap - 6 - 3.5 * k
            cv.polyline([f.p(x, y + 0.02 * (x - _CX) ** 2 * 0.1) for x in np.linspace(_CX - 12, _CX + 12, 5)], wrinkle, 1.0)
    mw = ident.mouth_width * (1 + 0.15 * nz.smile)
    my = ident.mouth_y - 2.5 * max(0.0, nz.smile)
    k = f.facing(_CX)
    centre = f.p(_CX, my, 2.0)
    opening = 5.0 * nz.mouth_open
    cv.ellipse((centre[0], centre[1] + opening * 0.4), (mw * k, ident.lip_thickness + opening), ident.lip_colour)
    if opening > 1.0:
        cv.ellipse((centre[0], centre[1] + opening * 0.4), (mw * k * 0.8, opening), (30, 25, 60))
        cv.ellipse((centre[0], centre[1] - opening * 0.3), (mw * k * 0.55, opening * 0.3), (225, 230, 235))
    corners = [f.p(_CX - mw, my), f.p(_CX, my + 3.0 * nz.smile + opening * 0.4, 2.0), f.p(_CX + mw, my)]
    cv.polyline(corners, _scaled(ident.lip_colour, 0.45), 1.0)


def _draw_accessories(cv: _Canvas, f: _Face) -> None:
    ident, nz = f.id, f.nz
    if ident.mole is not None:
        mx = _CX + ident.mole[0] * f.fw
        cv.ellipse(f.p(mx, f.fcy + ident.mole[1] * f.fh), (1.3, 1.3), (30, 40, 60))
    if ident.glasses:
        centres = []
        for side in (-1.0, 1.0):
            x = _CX + side * ident.eye_spacing
            c = f.p(x, ident.eye_y + 0.5)
            k = f.facing(x)
            r = ident.eye_width * 1.2
            centres.append(c)
            if ident.glasses == 1:
                cv.ellipse(c, (r * k, r * 0.85), ident.glasses_colour, thickness=max(1, round(1.5 * cv.scale)))
            else:
                box = [(c[0] - r * k, c[1] - r * 0.7), (c[0] + r * k, c[1] - r * 0.7),
                       (c[0] + r * k, c[1] + r * 0.7), (c[0] - r * k, c[1] + r * 0.7)]
                cv.polyline(box, ident.glasses_colour, 1.5, closed=True)
        cv.polyline(centres, ident.glasses_colour, 1.3)
    occ = nz.occluder
    if occ is None:
        return
    if occ.kind == "mask":
        xs = np.linspace(_CX - f.fw * 0.95, _CX + f.fw * 0.95, 9)
        lower = [f.p(x, f.fcy + f.fh * 0.95 * math.sqrt(max(0.0, 1 - ((x - _CX) / f.fw) ** 2))) for x in xs]
        upper = [f.p(x, ident.nose_y - 2) for x in xs[::-1]]
        cv.polygon(lower + upper, occ.colour)
    elif occ.kind == "sunglasses":
        for side in (-1.0, 1.0):
            cv.ellipse(f.p(_CX + side * ident.eye_spacing, ident.eye_y + 1), (ident.eye_width * 1.4, ident.eye_width),
                       _scaled(occ.colour, 0.25))
    else:
        colour = f.skin if occ.kind == "hand" else occ.colour
        cv.ellipse((_CX + occ.x * f.fw, f.fcy + occ.y * f.fh), (occ.size * f.fw, occ.size * f.fh * 0.7), colour,
                   angle=occ.x * 40)


def _background(nz: Nuisance, rng: np.random.Generator, size: int) -> np.ndarray:
    """A diagonal two-colour gradient with low-frequency blotches: one 5x5 grid, resized once."""
    t = np.linspace(0.0, 1.0, 5)
    ramp = ((t[None, :] + t[:, None]) / 2)[:, :, None]
    grid = np.asarray(nz.background[0]) * (1 - ramp) + np.asarray(nz.background[1]) * ramp
    grid += rng.normal(0, nz.background_texture, grid.shape)
    return cv2.resize(np.clip(grid, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)


# Sensor noise comes from a fixed bank of Gaussian samples cut at random offsets: drawing fresh
# normals for every pixel would cost more than drawing the whole face.
_NOISE_BANK = np.random.default_rng(20240229).standard_normal((512, 512), dtype=np.float32)


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    if size > _NOISE_BANK.shape[0]:
        return rng.standard_normal((size, size, 3), dtype=np.float32)
    offsets = rng.integers(0, _NOISE_BANK.shape[0] - size + 1, (3, 2))
    return cv2.merge([_NOISE_BANK[y:y + size, x:x + size] for y, x in offsets])


def _photometric(image: np.ndarray, nz: Nuisance, rng: np.random.Generator) -> np.ndarray:
    """Lighting ramp, brightness and colour cast, blur, sensor noise and JPEG."""
    size = image.shape[0]
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    light = 1.0 + (ramp[None, :] * math.cos(nz.light_angle) + ramp[:, None] * math.sin(nz.light_angle)) * nz.light_strength
    gain = cv2.merge([light * np.float32(nz.brightness * c) for c in nz.colour_cast])
    if nz.blur_sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), nz.blur_sigma * size / 112.0)
    lit = cv2.multiply(image, gain, dtype=cv2.CV_32F)
    noise = _noise(rng, size) if nz.noise_sigma > 0 else np.zeros_like(lit)
    out = cv2.addWeighted(lit, 1.0, noise, float(nz.noise_sigma), 0.0, dtype=cv2.CV_8U)  # saturates to 0..255
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(nz.jpeg_quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def alignment_matrix(landmarks: np.ndarray, nz: Nuisance) -> np.ndarray:
    """Canonical frame -> aligned 112x112 crop: the 5-point similarity, then the residual roll/scale/shift."""
    align = np.vstack([estimate_similarity(landmarks, TEMPLATE_112), [0, 0, 1]])
    rot = cv2.getRotationMatrix2D((56.0, 56.0), nz.roll, nz.scale)
    rot[:, 2] += nz.shift
    return (np.vstack([rot, [0, 0, 1]]) @ align)[:2]


def render_face(ident: Identity, nz: Nuisance, rng: np.random.Generator, size: int = 112,
                crop: np.ndarray | None = None) -> RenderedFace:
    """Draw `ident` under `nz`. Without `crop` the result is the aligned 112x112 face (size 112); with a 2x3
    `crop` matrix (aligned frame -> output pixels) it is a loose crop of `size` x `size` pixels."""
    face = _Face(ident, nz)
    lms = face.landmarks()
    matrix = alignment_matrix(lms, nz)
    if crop is not None:
        matrix = (np.vstack([crop, [0, 0, 1]]) @ np.vstack([matrix, [0, 0, 1]]))[:2]
    cv = _Canvas(_background(nz, rng, size), matrix)
    _draw_head(cv, face)
    _draw_hair_front(cv, face)
    _draw_eyes(cv, face)
    _draw_nose_mouth(cv, face)
    _draw_accessories(cv, face)
    image = _photometric(cv.image, nz, rng)
    return RenderedFace(image, cv.points(lms).astype(np.float32))


def render_identity_image(params: Identity, nuisance: Nuisance, rng: np.random.Generator) -> np.ndarray:
    """The aligned 112x112 BGR face (the name docs/architecture.md gives)."""
    return render_face(params, nuisance, rng).image
