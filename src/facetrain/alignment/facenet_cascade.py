"""The MTCNN cascade: image pyramid -> P-Net proposals -> R-Net refinement -> O-Net boxes + landmarks.

Coordinates are 0-based pixels; a box (x1, y1, x2, y2) covers pixels x1..x2 inclusive, so its
width is x2 - x1 + 1 (the convention the released weights' regression offsets assume).
Crops for R-Net/O-Net are zero-padded where a box leaves the image, as in the original MTCNN,
so landmarks stay relative to the whole box. Networks run in batches on `device`; images are
resized with cv2's INTER_AREA, the interpolation facenet-pytorch used with these weights.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from facetrain.alignment.nms import batched_nms, nms

_PNET_CELL, _PNET_STRIDE = 12, 2
_BATCH = 512  # R/O-Net crops per forward, bounds memory on many-face images


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which a 12-pixel P-Net window sees faces of min_face_size and up."""
    scale = _PNET_CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= _PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _normalise(batch_uint8: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N,H,W,3) uint8 RGB -> (N,3,H,W) float in [-1, 1) on device, MTCNN's (x - 127.5) / 128.

    The result is channels-last in memory (a free view of HWC), which the few-channel
    convolutions and poolings of MTCNN run markedly faster on.
    """
    tensor = torch.from_numpy(batch_uint8).to(device)
    return tensor.permute(0, 3, 1, 2).float().sub_(127.5).mul_(0.0078125)


def _pyramid(rgb: np.ndarray, scales: list[float]) -> list[np.ndarray]:
    """The image at each scale, each level shrunk from the previous one (INTER_AREA's cost
    follows the source size, so this is far cheaper than shrinking the original every time)."""
    height, width = rgb.shape[:2]
    levels, scaled = [], rgb
    for scale in scales:
        scaled = cv2.resize(scaled, (int(width * scale + 1), int(height * scale + 1)), interpolation=cv2.INTER_AREA)
        levels.append(scaled)
    return levels


def _run_pnet(levels: list[np.ndarray], scales: list[float], pnet: torch.nn.Module, threshold: float,
              device: torch.device) -> np.ndarray:
    """Candidate windows (N,9): x1,y1,x2,y2,score,dx1,dy1,dx2,dy2 after per-scale NMS 0.5."""
    found, groups = [], []
    for level, (scaled, scale) in enumerate(zip(levels, scales)):
        reg, prob = pnet(_normalise(scaled[None], device))
        face = prob[0, 1]
        ys, xs = torch.nonzero(face >= threshold, as_tuple=True)
        if len(ys) == 0:
            continue
        score = face[ys, xs].cpu().numpy()
        offsets = reg[0][:, ys, xs].T.cpu().numpy()
        cell = np.stack([xs.cpu().numpy(), ys.cpu().numpy()], axis=1).astype(np.float64) * _PNET_STRIDE
        top_left = np.floor(cell / scale)
        bottom_right = np.floor((cell + _PNET_CELL) / scale) - 1.0
        found.append(np.concatenate([top_left, bottom_right, score[:, None], offsets], axis=1))
        groups.append(np.full(len(score), level))
    if not found:
        return np.empty((0, 9))
    windows, groups = np.concatenate(found), np.concatenate(groups)
    return windows[batched_nms(windows[:, :4], windows[:, 4], groups, 0.5)]


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets, which are fractions of the box width/height."""
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0], axis=1)
    return boxes[:, :4] + offsets * np.tile(size, 2)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square of its longer side, same centre."""
    width, height = boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0
    side = np.maximum(width, height)
    x1 = boxes[:, 0] + (width - side) * 0.5
    y1 = boxes[:, 1] + (height - side) * 0.5
    return np.stack([x1, y1, x1 + side - 1.0, y1 + side - 1.0], axis=1)


def _crops(levels: list[np.ndarray], boxes: np.ndarray, size: int) -> np.ndarray:
    """(N,size,size,3) uint8: each box cut out (zero outside the image) and area-resized.

    `levels` are the image from full size down; each box is cut from the smallest level that
    still shows it at `size` pixels or more, so a large face costs little to shrink.
    """
    height, width = levels[0].shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1.0
    for k, box in enumerate(boxes[:, :4]):
        image = next((lvl for lvl in reversed(levels) if sides[k] * lvl.shape[1] / width >= size), levels[0])
        sx, sy = image.shape[1] / width, image.shape[0] / height
        # Inclusive pixel box -> the half-open span it covers, scaled, rounded back to pixels.
        x1, x2 = round(box[0] * sx), round((box[2] + 1.0) * sx) - 1
        y1, y2 = round(box[1] * sy), round((box[3] + 1.0) * sy) - 1
        out[k] = _cut_resized(image, x1, y1, x2, y2, size)
    return out


def _cut_resized(image: np.ndarray, x1: int, y1: int, x2: int, y2: int, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    box_w, box_h = x2 - x1 + 1, y2 - y1 + 1
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)
    if box_w < 2 or box_h < 2 or sx2 < sx1 or sy2 < sy1:
        return np.zeros((size, size, 3), np.uint8)
    if (sx1, sy1, sx2, sy2) == (x1, y1, x2, y2):
        patch = image[y1 : y2 + 1, x1 : x2 + 1]
    else:
        patch = np.zeros((box_h, box_w, 3), dtype=np.uint8)
        patch[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = image[sy1 : sy2 + 1, sx1 : sx2 + 1]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def _batched(net: torch.nn.Module, crops: np.ndarray, device: torch.device) -> list[np.ndarray]:
    outputs = [net(_normalise(crops[i : i + _BATCH], device)) for i in range(0, len(crops), _BATCH)]
    return [torch.cat(parts).float().cpu().numpy() for parts in zip(*outputs)]


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)


def detect_faces(
    rgb: np.ndarray,
    nets: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module],
    device: torch.device,
    min_face_size: float,
    thresholds: tuple[float, float, float],
    nms_threshold: float,
    factor: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N,4), scores (N,), landmarks (N,5,2) of the faces in an HxWx3 uint8 RGB image, best first."""
    pnet, rnet, onet = nets
    height, width = rgb.shape[:2]
    scales = pyramid_scales(height, width, min_face_size, factor)

    levels = _pyramid(rgb, scales)
    windows = _run_pnet(levels, scales, pnet, thresholds[0], device)
    if len(windows) == 0:
        return _empty()
    windows = windows[nms(windows[:, :4], windows[:, 4], nms_threshold)]
    boxes = _square(_regress(windows[:, :4], windows[:, 5:9]))

    # R-Net only scores and nudges boxes: crops may come from the pyramid.
    offsets, prob = _batched(rnet, _crops([rgb, *levels], boxes, 24), device)
    keep = prob[:, 1] > thresholds[1]
    boxes, offsets, scores = boxes[keep], offsets[keep], prob[keep, 1]
    if len(boxes) == 0:
        return _empty()
    keep = nms(boxes, scores, nms_threshold)
    boxes = _square(_regress(boxes[keep], offsets[keep]))

    # O-Net's landmarks are relative to its crop: cut it from the full-resolution image.
    offsets, points, prob = _batched(onet, _crops([rgb], boxes, 48), device)
    keep = prob[:, 1] > thresholds[2]
    boxes, offsets, points, scores = boxes[keep], offsets[keep], points[keep], prob[keep, 1]
    if len(boxes) == 0:
        return _empty()
    # O-Net's landmarks are fractions of the box it was shown, before that box is regressed.
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0], axis=1)
    landmarks = boxes[:, None, :2] + np.stack([points[:, :5], points[:, 5:]], axis=2) * size[:, None, :]
    boxes = _regress(boxes, offsets)
    # "min" overlap removes a small box nested inside a bigger one of the same face.
    keep = nms(boxes, scores, nms_threshold, mode="min")
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), landmarks[keep].astype(np.float32)

