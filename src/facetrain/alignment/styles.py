"""The two MTCNN detector styles (torch-free, so that command-line parsers can name them)."""
from __future__ import annotations

DETECTORS = ("adaface", "facenet")
DEFAULT_FACTORS = {"adaface": 0.85, "facenet": 0.709}  # pyramid step of each style
DETECTOR_HELP = ("MTCNN conventions: adaface (default) gives exactly the crops of AdaFace's face_alignment, "
                 "which its released models expect; facenet (facenet-pytorch's cascade) finds more faces "
                 "in group photos")
