"""`facetrain tinyface`: TinyFace rank-1/5/20 identification (AdaFace's validation_lq/validate_tinyface.py)."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_batch_size, add_ckpt, add_device, add_precision, add_quiet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facetrain.eval.fusion import FUSION_METHODS
    from facetrain.eval.tinyface_data import ALIGNED_DIR

    parser.add_argument("--data_root", required=True,
                        help=f"folder holding tinyface/Testing_Set/ (the release) and {ALIGNED_DIR}/ (aligned copy)")
    add_ckpt(parser, "--ckpt_path")
    parser.add_argument("--arch", default=None, help="backbone name (default: inferred from the weights)")
    parser.add_argument("--fusion", "--fusion_method", dest="fusion", choices=FUSION_METHODS, default="pre_norm_vector_add",
                        help="how image and flip features are fused (none = no flip test)")
    parser.add_argument("--aligned_dir", default=ALIGNED_DIR,
                        help="the aligned 112x112 images, relative to --data_root unless absolute")
    parser.add_argument("--cache_dir", default="tinyface_result",
                        help="where the image features are cached (another --fusion then re-scores without the network)")
    parser.add_argument("--json", default=None, help="write the results as JSON here")
    add_batch_size(parser, 128)
    add_device(parser)
    add_precision(parser)
    parser.add_argument("--channels_last", action="store_true")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.eval.tinyface_data import load_tinyface

    protocol = load_tinyface(args.data_root, args.aligned_dir)  # a missing or incomplete release fails first, fast
    if not protocol.mat_lists_checked:
        print("note: scipy is not installed, so the folders were not checked against the release's .mat lists "
              "(pip install 'facetrain[tinyface]')")

    from facetrain.checkpoint import load_backbone
    from facetrain.devices import resolve_device
    from facetrain.eval.feature_cache import checkpoint_key
    from facetrain.eval.tinyface import run_tinyface
    from facetrain.io_utils import atomic_write_json

    device = resolve_device(args.device)
    model, info = load_backbone(args.ckpt, args.arch)
    result = run_tinyface(model, protocol, args.cache_dir, checkpoint_key(args.ckpt, info["arch"]), args.fusion,
                          args.batch_size, device, args.precision, args.channels_last, progress=not args.quiet)
    result = {"ckpt": str(args.ckpt), "arch": info["arch"]} | result
    print(f"TinyFace  {info['arch']} ({args.ckpt})  fusion {args.fusion}  {result['mated_probes']} probes, "
          f"{result['gallery_match']} gallery + {result['distractors']} distractors")
    print("  ".join(f"rank-{k[5:]} {100 * v:.2f}" for k, v in result.items() if k.startswith("rank_")))
    if args.json:
        atomic_write_json(args.json, result)
    return 0
