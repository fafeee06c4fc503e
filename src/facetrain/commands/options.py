"""The options several verbs share, spelled and defaulted the same way everywhere."""
from __future__ import annotations

import argparse

from facetrain.option_checks import at_least, ranged


def add_ckpt(parser: argparse.ArgumentParser, *aliases: str, required: bool = True, default: str | None = None) -> None:
    """--ckpt: a checkpoint file, a released model name (ir_50, ...) or hf://owner/repo/file."""
    parser.add_argument("--ckpt", *aliases, dest="ckpt", required=required, default=default,
                        help="checkpoint file, released model name (e.g. ir_50) or hf://owner/repo/file"
                             + (f" (default {default})" if default else ""))


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="torch device: auto (first GPU, else CPU), cpu, cuda:1, ...")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "--no_progress", dest="quiet", action="store_true", help="no progress bars")


def add_detector(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--detector adaface|facenet: which MTCNN conventions align raw photos (facetrain.alignment.styles)."""
    from facetrain.alignment.styles import DETECTOR_HELP, DETECTORS

    parser.add_argument("--detector", choices=DETECTORS, default="adaface", help=prefix + DETECTOR_HELP)


def add_precision(parser: argparse.ArgumentParser) -> None:
    """--precision for evaluation: fp32 (the reference numbers) unless asked; the names are facetrain.precision's."""
    from facetrain.precision import EVAL_PRECISIONS

    parser.add_argument("--precision", choices=EVAL_PRECISIONS, default="fp32",
                        help="fp32 gives the reference numbers; bf16/fp16 (autocast) are faster approximations")


def add_batch_size(parser: argparse.ArgumentParser, default: int = 256) -> None:
    ranged(parser.add_argument("--batch_size", type=int, default=default,
                               help=f"images per forward pass (default {default})"),
           at_least(1, "images per forward pass"))


def add_workers(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    ranged(parser.add_argument("--workers", type=int, default=default, help=f"{what} (default {default})"),
           at_least(1, what))


def add_max_pixels(parser: argparse.ArgumentParser, what: str) -> None:
    """--max_pixels: the pixel limit checked from image headers before decoding (facetrain.data.guards.pixel_limit)."""
    parser.add_argument("--max_pixels", type=int, default=None,
                        help=f"refuse {what} with more pixels than this, before decoding (default 50000000; "
                             "env FACETRAIN_MAX_PIXELS)")
