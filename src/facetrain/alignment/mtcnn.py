"""MTCNN's three networks (P-Net, R-Net, O-Net) and the detector that runs them.

The modules reproduce facenet-pytorch's layer names and shapes so that its released state
dicts (`facenet_pytorch/data/{pnet,rnet,onet}.pt`, MIT licence) load strictly. Those three files
ship inside this package (`facetrain/alignment/weights/`, with their licence); the facenet-pytorch
package itself is never imported (it needs torchvision).
AdaFace's `mtcnn_pytorch/src/weights/*.npy` hold the same numbers; where its R/O-Net flatten
(C, W, H) before the dense layers, facenet-pytorch's dense weights expect (W, H, C), which
`_flatten_transposed` produces, so both compute the same function (checked against AdaFace's
own detections in tests/test_adaface_alignment.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facetrain.alignment import facenet_cascade
from facetrain.alignment.adaface_detect import adaface_scales, detect_faces_adaface
from facetrain.alignment.styles import DEFAULT_FACTORS, DETECTORS
from facetrain.errors import ConfigError

WEIGHTS_ENV = "FACETRAIN_MTCNN_WEIGHTS"
PACKAGED_WEIGHTS = Path(__file__).with_name("weights")


class PNet(nn.Module):
    """Fully convolutional proposal net: 12x12 windows, stride 2 -> (box offsets (B,4,h,w), face prob (B,2,h,w))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(box offsets (B,4,h,w), class logits (B,2,h,w) non-face/face) before any softmax."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offsets, logits = self.logits(x)
        return offsets, torch.softmax(logits, dim=1)


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    # The weights were converted from a TF/Caffe model that flattens in (W, H, C) order.
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops -> (box offsets (N,4), face prob (N,2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_transposed(x)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48x48 crops -> (box offsets (N,4), landmarks (N,10) as x1..x5,y1..y5, face prob (N,2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_transposed(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def find_weights_dir() -> Path:
    """Folder holding pnet.pt, rnet.pt and onet.pt: $FACETRAIN_MTCNN_WEIGHTS when set, else the copy
    installed with this package."""
    override = os.environ.get(WEIGHTS_ENV)
    folder = Path(override) if override else PACKAGED_WEIGHTS
    missing = [f"{name}.pt" for name in ("pnet", "rnet", "onet") if not (folder / f"{name}.pt").is_file()]
    if missing:
        where = f"${WEIGHTS_ENV}={override}" if override else f"{folder} (installed with facetrain)"
        raise ConfigError(f"MTCNN weights {', '.join(missing)} not found in {where}; set {WEIGHTS_ENV} to a "
                          "folder holding pnet.pt, rnet.pt and onet.pt, or reinstall facetrain")
    return folder


def load_nets(device: str | torch.device = "cpu", weights_dir: str | os.PathLike | None = None) -> tuple[PNet, RNet, ONet]:
    """The three networks with the released weights, in eval mode on `device`."""
    folder = Path(weights_dir) if weights_dir is not None else find_weights_dir()
    nets = (PNet(), RNet(), ONet())
    for name, net in zip(("pnet", "rnet", "onet"), nets):
        state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        # channels-last matches the inputs `detect` builds (HWC views) and speeds up these thin convs.
        net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    return nets


class MTCNN:
    """Face detector with 5 landmarks (Zhang et al. 2016); docs/alignment.md.

    `style` chooses the cascade's conventions, for the same released weights:
    - "adaface" (default): AdaFace's `face_alignment/mtcnn.py` exactly (`adaface_detect`):
      pyramid factor 0.85, PIL resizes, P-Net's row-wise softmax, integer boxes; AdaFace's
      released models were trained and evaluated on these crops;
    - "facenet": facenet-pytorch's conventions (`facenet_cascade`): factor 0.709, area resizes, class
      softmax in P-Net; it proposes more windows, so it finds more faces in group photos.

    `detect(image)` takes an HxWx3 uint8 array (RGB unless `channels="bgr"`) and returns
    `(boxes (N,4) x1,y1,x2,y2, scores (N,), landmarks (N,5,2) x,y)` float32, best score first
    (for "adaface" in the order AdaFace's `align_multi` returns faces); landmark order: left
    eye, right eye, nose, left and right mouth corners (as the templates).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        style: str = "adaface",
        min_face_size: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9),
        nms_threshold: float = 0.7,
        factor: float | None = None,
        weights_dir: str | os.PathLike | None = None,
    ) -> None:
        """`factor`: the pyramid step; None means the style's own (0.85 adaface, 0.709 facenet)."""
        if style not in DETECTORS:
            raise ConfigError(f"MTCNN detector must be one of {DETECTORS}, got {style!r}")
        factor = DEFAULT_FACTORS[style] if factor is None else float(factor)
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"MTCNN pyramid factor must be in (0, 1), got {factor}")
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = load_nets(self.device, weights_dir)
        self.style = style
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.nms_threshold = float(nms_threshold)
        self.factor = factor

    def detect(self, image: np.ndarray, channels: str = "rgb") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if channels not in ("rgb", "bgr"):
            raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
        rgb = np.ascontiguousarray(image[:, :, ::-1] if channels == "bgr" else image)
        nets = (self.pnet, self.rnet, self.onet)
        with torch.inference_mode():
            if self.style == "adaface":
                return detect_faces_adaface(rgb, nets, self.device, self.min_face_size, self.thresholds,
                                            (self.nms_threshold,) * 3, self.factor)
            return facenet_cascade.detect_faces(rgb, nets, device=self.device, min_face_size=self.min_face_size,
                                       thresholds=self.thresholds, nms_threshold=self.nms_threshold,
                                       factor=self.factor)

    def pyramid_levels(self, height: int, width: int) -> int:
        """How many scales P-Net runs on for an image of this size."""
        scales = adaface_scales if self.style == "adaface" else facenet_cascade.pyramid_scales
        return len(scales(height, width, self.min_face_size, self.factor))
