"""`facetrain audit DATA --ckpt MODEL --out DIR`: identity collisions, intra-class consistency, suspected
mislabels and leakage of reference sets in a training dataset; writes DIR/audit.json and DIR/audit.html.
Several datasets (`facetrain audit A B C ...`) are audited into DIR/<name>/ and compared in DIR/scorecard.json
and DIR/scorecard.html."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facetrain.audit.threshold import DEFAULT_FAR
    from facetrain.commands.options import add_batch_size, add_device, add_quiet
    from facetrain.option_checks import at_least, ranged
    from facetrain.eval.fusion import FUSION_METHODS

    parser.add_argument("data", nargs="+", help="training data: image folder, RecordIO folder (train.rec), training "
                                                "memfile, compound folder; several: one scorecard row each")
    parser.add_argument("--ckpt", required=True, help="checkpoint (ours, official AdaFace .ckpt, safetensors)")
    parser.add_argument("--out", required=True, help="output folder (audit.json, audit.html, figures/, embedding cache)")
    parser.add_argument("--reference", nargs="+", default=[],
                        help="sets to check for leakage: .bin files, memfiles, folders of them, image folders")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, default=None, help="threshold for every level: image cosine and identity similarity "
                                                                  "(default: each level's own, set at --far)")
    group.add_argument("--far", type=float, default=DEFAULT_FAR,
                       help=f"false-accept rate that sets the threshold (default {DEFAULT_FAR:g})")
    parser.add_argument("--calibration", default=None,
                        help=".bin whose non-matching pairs set the image-level leakage threshold at --far "
                             "(default: each reference's own impostor pairs) and, below 20 training identities, the "
                             "collision threshold")
    parser.add_argument("--write_filtered", default=None,
                        help="write an image folder of links without the defects --drop names, plus dropped.json")
    parser.add_argument("--drop", default="mislabels,collisions,leaks",
                        help="what --write_filtered leaves out, comma-separated: mislabels (suspected mislabelled "
                             "images), collisions (all but one identity per cluster), leaks (the training images and "
                             "identities of a reference's significant excess); default all three")
    parser.add_argument("--arch", default=None, help="backbone name (default: inferred from the weights)")
    parser.add_argument("--fusion", choices=FUSION_METHODS, default="pre_norm_vector_add",
                        help="image + flip feature fusion, as in evaluation (none = no flip)")
    add_device(parser)
    add_batch_size(parser)
    ranged(parser.add_argument("--top", type=int, default=20, help="how many least consistent identities to list"),
           at_least(0, "a number of identities"))
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.audit.pipeline import AuditOptions, format_summary, run_audit
    from facetrain.audit.scorecard import run_scorecard
    from facetrain.devices import resolve_device

    device = str(resolve_device(args.device))
    options = AuditOptions(
        data=args.data[0], checkpoint=args.ckpt, out_dir=args.out, references=args.reference, threshold=args.threshold,
        far=args.far, calibration=args.calibration, write_filtered=args.write_filtered,
        drop=tuple(k.strip() for k in args.drop.split(",") if k.strip()), device=device,
        batch_size=args.batch_size, arch=args.arch, fusion=args.fusion, top=args.top, progress=not args.quiet)
    if len(args.data) > 1:
        card = run_scorecard(args.data, options)
        for row in card["datasets"]:
            print(f"{row['dataset']}: {row['identities']} identities, {row['images']} images; consistency "
                  f"{row['consistency']:.3f}, uniqueness {row['uniqueness']:.3f}, suspected mislabels "
                  f"{100 * row['mislabel_share']:.2f} %")
        print(f"scorecard: {args.out}/scorecard.json, {args.out}/scorecard.html")
        return 0
    print(format_summary(run_audit(options)))
    print(f"report: {args.out}/audit.json, {args.out}/audit.html")
    return 0
