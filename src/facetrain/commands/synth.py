"""`facetrain synth --out DIR`: a deterministic synthetic face dataset (image folder, .bin sets, RecordIO, IJB)."""
from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facetrain.commands.options import add_workers
    from facetrain.synthetic.profiles import BENCHMARK_NAMES

    parser.add_argument("--out", required=True, help="output folder (existing outputs of the same kind are replaced)")
    parser.add_argument("--identities", type=int, default=300, help="training identities")
    parser.add_argument("--images_per_identity", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--bins", action="store_true", help="write <out>/<set>.bin verification sets (held-out identities)")
    parser.add_argument("--bin_names", nargs="+", default=list(BENCHMARK_NAMES), choices=BENCHMARK_NAMES,
                        help="which verification sets (each with its own nuisance profile)")
    parser.add_argument("--pairs_per_set", type=int, default=600, help="pairs per .bin, half genuine")
    parser.add_argument("--val_identities", type=int, default=None,
                        help="identities per verification set (default: pairs_per_set / 2)")
    parser.add_argument("--rec", action="store_true", help="also write <out>/train.rec + train.idx (InsightFace layout)")
    parser.add_argument("--ijb", action="store_true", help="write an IJB-like protocol under <out>/ijb/<ijb_name>/")
    parser.add_argument("--ijb_subjects", type=int, default=40)
    parser.add_argument("--ijb_name", default="IJBC", choices=("IJBC", "IJBB"),
                        help="file names/prefixes of the protocol, as the evaluator expects them")
    parser.add_argument("--tinyface", action="store_true",
                        help="write a TinyFace-like test set (release layout + aligned copy) under <out>/tinyface_root/")
    parser.add_argument("--tinyface_subjects", type=int, default=40, help="identities with gallery images and probes")
    parser.add_argument("--tinyface_distractors", type=int, default=200, help="gallery distractors (one identity each)")
    parser.add_argument("--rfw", action="store_true",
                        help="write four groups of pairs in RFW's release layout under <out>/rfw/test/ (synthetic groups, "
                             "harder by construction from group_a to group_d; for facetrain eval --rfw)")
    parser.add_argument("--rfw_pairs", type=int, default=600, help="pairs per group (a multiple of 20)")
    parser.add_argument("--no_folder", action="store_true", help="do not write the <out>/imgs image folder")
    add_workers(parser, 1, "rendering processes (the output does not depend on it)")


def run(args: argparse.Namespace) -> int:
    from facetrain.synthetic.generate import generate_dataset

    start = time.perf_counter()
    summary = generate_dataset(
        args.out, args.identities, args.images_per_identity, args.seed, folder=not args.no_folder, bins=args.bins,
        rec=args.rec, ijb=args.ijb, bin_names=args.bin_names, pairs_per_set=args.pairs_per_set,
        val_identities=args.val_identities, ijb_subjects=args.ijb_subjects, ijb_name=args.ijb_name,
        tinyface=args.tinyface, tinyface_subjects=args.tinyface_subjects, tinyface_distractors=args.tinyface_distractors,
        rfw=args.rfw, rfw_pairs=args.rfw_pairs, workers=args.workers,
    )
    if "train" in summary:
        train = summary["train"]
        print(f"train: {train['identities']} identities, {train['images']} images"
              + (f", {args.out}/imgs" if train["image_folder"] else "") + (f", {args.out}/train.rec" if train["recordio"] else ""))
    for name, info in summary.get("verification_sets", {}).items():
        print(f"{name}.bin: {info['pairs']} pairs ({info['genuine']} genuine), {info['identities']} identities, "
              f"raw-pixel baseline accuracy {100 * info['raw_pixel_accuracy']:.1f}%")
    if "ijb" in summary:
        ijb = summary["ijb"]
        print(f"{ijb['dataset_name']}: {ijb['images']} images, {ijb['templates']} templates, {ijb['pairs']} pairs "
              f"under {args.out}/{ijb['root']} (facetrain ijb --data_root {args.out}/ijb --dataset_name {ijb['dataset_name']})")
    if "tinyface" in summary:
        tiny = summary["tinyface"]
        print(f"TinyFace: {tiny['probes']} probes, {tiny['gallery_match']} gallery images of {tiny['subjects']} subjects, "
              f"{tiny['distractors']} distractors (facetrain tinyface --data_root {args.out}/{tiny['data_root']})")
    if "rfw" in summary:
        groups = summary["rfw"]["groups"]
        print(f"groups: {', '.join(groups)} ({next(iter(groups.values()))['pairs']} pairs each) under "
              f"{args.out}/rfw/test (facetrain eval --rfw {args.out}/rfw)")
    print(f"wrote {args.out}/synth_summary.json in {time.perf_counter() - start:.1f}s")
    return 0
