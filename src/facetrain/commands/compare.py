"""`facetrain compare IMG... --ckpt P [--out sim.png]`: align, embed and print the cosine similarity matrix."""
from __future__ import annotations

import argparse

from facetrain.align.aligner import SELECT_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos (raw: each is detected and aligned)")
    parser.add_argument("--ckpt", default="ir_50", help="checkpoint file, or a released model name (default ir_50)")
    parser.add_argument("--out", help="also write a heatmap PNG with the aligned faces along the axes")
    parser.add_argument("--select", choices=SELECT_MODES, default="score", help="face kept when several are found")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")


def run(args: argparse.Namespace) -> int:
    from facetrain.align.aligner import FaceAligner
    from facetrain.compare import compare_images, format_matrix, plot_similarity
    from facetrain.infer import load_pretrained_model

    model = load_pretrained_model(args.ckpt, device=args.device)
    faces, similarity = compare_images(model, args.images, FaceAligner(args.device, args.select), args.device)
    print(format_matrix(similarity, args.images))
    if args.out:
        plot_similarity(faces, similarity, args.images, args.out)
        print(f"heatmap: {args.out}")
    return 0
