"""The MTCNN cascade exactly as AdaFace's `face_alignment/mtcnn.py` runs it (its `mtcnn_pytorch`).

AdaFace's released models were trained and evaluated on faces cut this way, so this is the
default. What sets it apart from `facenet_cascade.py` (facenet-pytorch's conventions), and is
reproduced here on purpose:
- P-Net's face score is a softmax along each row of the score map (see `_pnet_windows`);
- pyramid scales `(12 / min_face) * factor**k` while the scaled short side stays > 12 px;
  each level is resized from the original with PIL's bilinear filter to ceil(size * scale);
- P-Net windows are mapped back with `round((2 * cell + 1) / scale)` (and `+ 12` for the far
  corner), NMS 0.5 within a scale, then NMS at `nms_thresholds[0]` over all scales;
- after each stage boxes are regressed, squared about their centre and rounded to whole
  pixels; R-Net / O-Net crops are cut at those integer boxes (zero outside the image) and
  PIL-bilinear resized to 24 / 48;
- cutting the crops clips the boxes themselves to the image (the reference's `correct_bboxes`
  writes into views of its input), so a box that leaves the image is regressed, NMS-ed and
  gives landmark fractions as the clipped box, not the square one the net saw (see `_clipped`);
- thresholds and NMS are strict `>` comparisons; NMS visits boxes by `np.argsort(score)`
  from the end; the last NMS uses the "min" overlap;
- landmarks are O-Net's fractions of the (unregressed) box it saw: `x1 + w * fx`, no -1.
Coordinates are 0-based pixels and a box covers x1..x2 inclusive (width x2 - x1 + 1).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from facetrain.alignment.nms import nms

_CELL, _STRIDE = 12, 2
_BATCH = 512  # R/O-Net crops per forward, bounds memory on many-face images


def adaface_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Pyramid scales: the first maps min_face_size to P-Net's 12 px, then one per factor step
    while the scaled short side is still above 12 px (computed as m * factor**k, not a running product)."""
    first = _CELL / min_face_size
    side = min(height, width) * first
    scales, k = [], 0
    while side > _CELL:
        scales.append(first * factor**k)
        side *= factor
        k += 1
    return scales


def _to_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,H,W) float32 (x - 127.5) * 0.0078125, in float32 like the reference."""
    tensor = torch.tensor(images).to(device).permute(0, 3, 1, 2)  # a copy: PIL's arrays are read-only
    return (tensor.float() - 127.5) * 0.0078125


def _pnet_windows(image: Image.Image, scale: float, pnet: torch.nn.Module, threshold: float,
                  device: torch.device) -> np.ndarray:
    """(N,9) x1,y1,x2,y2,score,dx1,dy1,dx2,dy2 of one pyramid level, after NMS 0.5 within it."""
    width, height = image.size
    scaled = np.asarray(image.resize((math.ceil(width * scale), math.ceil(height * scale)), Image.BILINEAR))
    offsets, logits = pnet.logits(_to_input(scaled[None], device))
    # AdaFace's P-Net applies its softmax over the last axis (the image columns), not over the
    # two classes: a window's "probability" is its face logit normalised along its row. This
    # is why it proposes fewer windows (and finds fewer faces in group photos) than facenet-pytorch.
    face = torch.softmax(logits[0, 1], dim=-1).cpu().numpy()
    rows, cols = np.nonzero(face > threshold)
    if len(rows) == 0:
        return np.empty((0, 9))
    reg = offsets[0].cpu().numpy()[:, rows, cols].T
    left, top = _STRIDE * cols + 1.0, _STRIDE * rows + 1.0
    windows = np.column_stack([
        np.round(left / scale), np.round(top / scale),
        np.round((left + _CELL) / scale), np.round((top + _CELL) / scale),
        face[rows, cols], reg,
    ])
    return windows[_nms(windows, 0.5)]


def _nms(rows: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """NMS over rows x1,y1,x2,y2,score,... visiting boxes as the reference does: the end of
    `np.argsort(score)` first (this only matters for equal scores, e.g. probabilities of 1.0)."""
    return nms(rows[:, :4], rows[:, 4], threshold, mode, visit_order=np.argsort(rows[:, 4])[::-1])


def _calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shift each corner by the net's offsets, fractions of the inclusive width/height."""
    width = boxes[:, 2] - boxes[:, 0] + 1.0
    height = boxes[:, 3] - boxes[:, 1] + 1.0
    return boxes[:, :4] + offsets * np.column_stack([width, height, width, height])


def _square_rounded(boxes: np.ndarray) -> np.ndarray:
    """Squares of the longer side about each box's centre, corners rounded to whole pixels."""
    width = boxes[:, 2] - boxes[:, 0] + 1.0
    height = boxes[:, 3] - boxes[:, 1] + 1.0
    side = np.maximum(width, height)
    x1 = boxes[:, 0] + width * 0.5 - side * 0.5
    y1 = boxes[:, 1] + height * 0.5 - side * 0.5
    return np.round(np.column_stack([x1, y1, x1 + side - 1.0, y1 + side - 1.0]))


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N,size,size,3) uint8: each integer box cut from the image, zero where it leaves it,
    PIL-bilinear resized. Boxes with no pixel inside the image give a black crop."""
    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        box_w, box_h = x2 - x1 + 1, y2 - y1 + 1
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)
        if box_w < 1 or box_h < 1 or sx2 < sx1 or sy2 < sy1:
            continue
        patch = np.zeros((box_h, box_w, 3), np.uint8)
        patch[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = rgb[sy1 : sy2 + 1, sx1 : sx2 + 1]
        out[k] = np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))
    return out


def _clipped(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes clipped to the image's pixels, as the reference leaves them once it has cut their crops:
    every later step (regression, NMS, landmark mapping) works on the clipped corners."""
    return np.column_stack([np.maximum(boxes[:, 0], 0.0), np.maximum(boxes[:, 1], 0.0),
                            np.minimum(boxes[:, 2], width - 1.0), np.minimum(boxes[:, 3], height - 1.0)])


def _batched(net: torch.nn.Module, crops: np.ndarray, device: torch.device) -> list[np.ndarray]:
    outputs = [net(_to_input(crops[i : i + _BATCH], device)) for i in range(0, len(crops), _BATCH)]
    return [torch.cat(parts).float().cpu().numpy() for parts in zip(*outputs)]


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)


def detect_faces_adaface(
    rgb: np.ndarray,
    nets: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module],
    device: torch.device,
    min_face_size: float = 20.0,
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9),
    nms_thresholds: tuple[float, float, float] = (0.7, 0.7, 0.7),
    factor: float = 0.85,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N,4), scores (N,), landmarks (N,5,2) of an HxWx3 uint8 RGB image, in AdaFace's order
    (the order its `align_multi` returns faces: best score first after the final NMS)."""
    pnet, rnet, onet = nets
    height, width = rgb.shape[:2]
    image = Image.fromarray(rgb)
    levels = [_pnet_windows(image, s, pnet, thresholds[0], device)
              for s in adaface_scales(height, width, min_face_size, factor)]
    windows = np.concatenate([np.empty((0, 9)), *levels])
    if len(windows) == 0:
        return _empty()
    windows = windows[_nms(windows, nms_thresholds[0])]
    boxes = _square_rounded(_calibrate(windows[:, :4], windows[:, 5:9]))

    offsets, probs = _batched(rnet, _crops(rgb, boxes, 24), device)
    boxes = _clipped(boxes, height, width)
    keep = probs[:, 1] > thresholds[1]
    boxes, offsets, scores = boxes[keep], offsets[keep], probs[keep, 1].astype(np.float64)
    keep = _nms(np.column_stack([boxes, scores]), nms_thresholds[1])
    boxes = _square_rounded(_calibrate(boxes[keep], offsets[keep]))
    if len(boxes) == 0:
        return _empty()

    offsets, points, probs = _batched(onet, _crops(rgb, boxes, 48), device)
    boxes = _clipped(boxes, height, width)
    keep = probs[:, 1] > thresholds[2]
    boxes, offsets, points, scores = boxes[keep], offsets[keep], points[keep], probs[keep, 1].astype(np.float64)
    size = np.column_stack([boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0])
    landmarks = boxes[:, None, :2] + np.stack([points[:, :5], points[:, 5:]], axis=2) * size[:, None, :]
    boxes = _calibrate(boxes, offsets)
    keep = _nms(np.column_stack([boxes, scores]), nms_thresholds[2], mode="min")
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), landmarks[keep].astype(np.float32)
