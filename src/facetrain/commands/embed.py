"""`facetrain embed DIR --ckpt P --out FILE.npz`: embeddings, norms and file list of a folder of faces."""
from __future__ import annotations

import argparse

from facetrain.commands.options import (add_batch_size, add_ckpt, add_detector, add_device, add_max_pixels,
                                        add_precision, add_quiet)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="folder of aligned 112x112 faces (searched recursively), or raw photos with --align")
    add_ckpt(parser)
    parser.add_argument("--out", required=True, help="output .npz (embeddings, norms, paths, failed_paths, failed_errors)")
    parser.add_argument("--align", action="store_true", help="detect and align each photo with MTCNN first")
    add_detector(parser, prefix="with --align: ")
    add_batch_size(parser)
    add_precision(parser)
    add_device(parser)
    add_max_pixels(parser, "photos (listed as failed)")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.data.guards.pixel_limit import set_max_pixels
    from facetrain.devices import resolve_device

    from facetrain.infer import embed_folder, load_model, save_embeddings

    set_max_pixels(args.max_pixels)
    device = resolve_device(args.device)
    model = load_model(args.ckpt, device=device)
    result = embed_folder(model, args.folder, batch_size=args.batch_size, device=device, precision=args.precision,
                          align=args.align, detector=args.detector, progress=not args.quiet)
    save_embeddings(args.out, result)
    print(f"embedded {len(result.paths)} images of {args.folder} -> {args.out} "
          f"({result.embeddings.shape[1]}-d); failed: {len(result.failed)}")
    for _, error in result.failed:
        print(f"  {error}")
    return 0
