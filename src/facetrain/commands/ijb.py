"""`facetrain ijb`: IJB-B / IJB-C 1:1 verification and 1:N identification (AdaFace's validate_IJB_BC.py flags)."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_batch_size, add_ckpt, add_device, add_precision, add_quiet, add_workers
from facetrain.option_checks import at_least, ranged


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_root", required=True, help="folder holding <IJBX>/loose_crop + <IJBX>/meta (or the seed layout)")
    parser.add_argument("--dataset_name", default="IJBC", help="IJBB or IJBC (any case)")
    add_ckpt(parser, "--ckpt_path")
    parser.add_argument("--output_dir", required=True, help="results and the feature cache go here")
    parser.add_argument("--arch", default=None, help="backbone name (default: inferred from the weights)")
    add_batch_size(parser, 128)
    add_device(parser)
    ranged(parser.add_argument("--gpu", type=int, default=None, help="AdaFace's flag: GPU index (same as --device cuda:N)"),
           at_least(0, "a GPU index"))
    add_precision(parser)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--fusion_method", default="pre_norm_vector_add",
                        choices=("pre_norm_vector_add", "average", "norm_weighted_avg", "concat"))
    parser.add_argument("--use_flip_test", type=_bool, default=True)
    parser.add_argument("--use_norm_score", type=_bool, default=None,
                        help="keep the feature norm (insightface N1) or not (N0); default: AdaFace's rule "
                             "(kept for pre_norm_vector_add only)")
    parser.add_argument("--use_detector_score", type=_bool, default=False,
                        help="weight image features by the faceness score (insightface D1)")
    add_workers(parser, 4, "threads reading and aligning loose crops")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.devices import resolve_device

    from pathlib import Path

    from facetrain.checkpoint import load_backbone
    from facetrain.eval.ijb import IJBMode, format_table, run_ijb
    from facetrain.eval.feature_cache import checkpoint_key

    device = resolve_device(f"cuda:{args.gpu}" if args.gpu is not None and args.device == "auto" else args.device)
    model, info = load_backbone(args.ckpt, args.arch)
    mode = IJBMode(args.fusion_method, args.use_flip_test, args.use_norm_score, args.use_detector_score)
    print(f"dataset {args.dataset_name.upper()}  mode {mode.name}  model {info['arch']} ({args.ckpt})")
    result = run_ijb(model, args.data_root, args.dataset_name, args.output_dir, checkpoint_key(args.ckpt, info["arch"]),
                     mode, args.batch_size, device, args.precision, args.channels_last, args.workers,
                     label=Path(args.ckpt).stem, progress=not args.quiet)
    tar = {float(k): v for k, v in result["tar_at_far"].items()}
    print(format_table(result["dataset"], result["method"], tar))
    ident = result["identification"]
    if ident is None:
        print(result["identification_skipped"])
    else:
        print("1:N  " + "  ".join(f"{k} {100 * v:.2f}" for k, v in ident.items() if k not in ("probes", "gallery")))
    print(f"results in {args.output_dir} (verification_result.csv/.json, roc.png)")
    return 0
