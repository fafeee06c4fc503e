"""`facetrain compare IMG... --ckpt P [--out sim.png]`: align, embed and print the cosine similarity matrix."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_ckpt, add_detector, add_device, add_max_pixels

from facetrain.alignment.aligner import SELECT_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos (raw: each is detected and aligned)")
    add_ckpt(parser, required=False, default="ir_50")
    parser.add_argument("--out", help="also write a heatmap PNG with the aligned faces along the axes")
    parser.add_argument("--select", choices=SELECT_MODES, default="score", help="face kept when several are found")
    add_detector(parser)
    add_device(parser)
    add_max_pixels(parser, "photos")


def run(args: argparse.Namespace) -> int:
    from facetrain.data.guards.pixel_limit import set_max_pixels
    from facetrain.devices import resolve_device

    from facetrain.alignment.aligner import FaceAligner
    from facetrain.compare import compare_images, format_matrix, plot_similarity
    from facetrain.api import load_model

    set_max_pixels(args.max_pixels)
    device = resolve_device(args.device)
    model = load_model(args.ckpt, device=device)
    aligner = FaceAligner(device, args.select, detector=args.detector)
    faces, similarity = compare_images(model, args.images, aligner, device)
    print(format_matrix(similarity, args.images))
    if model.threshold_cosine is not None:
        same = [f"[{i}]-[{j}]" for i in range(len(faces)) for j in range(i + 1, len(faces))
                if similarity[i, j] >= model.threshold_cosine]
        print(f"threshold {model.threshold_cosine:.4f}, {model.threshold_source}")
        print(f"same person (similarity >= threshold): {', '.join(same) or 'none'}")
    if args.out:
        plot_similarity(faces, similarity, args.images, args.out)
        print(f"heatmap: {args.out}")
    return 0
