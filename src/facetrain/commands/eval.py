"""`facetrain eval`: a checkpoint on the five high-quality verification sets (seed's eval_5valsets.sh)."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_batch_size, add_device, add_precision, add_quiet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from facetrain.eval.fusion import FUSION_METHODS

    parser.add_argument("--ckpt", "--start_from_model_statedict", dest="ckpt", required=True,
                        help="checkpoint (ours or an official AdaFace .ckpt)")
    parser.add_argument("--val_data_path", default=None, help="folder with <set>.bin files or memfiles")
    fairness = parser.add_argument_group("demographic fairness (instead of, or besides, --val_data_path)")
    fairness.add_argument("--rfw", default=None, metavar="PATH",
                          help="RFW as released (the folder holding data/ and txts/, or its parent), or a folder of "
                               "<Group>_test.bin files: per-group accuracy, STD, SER, FMR/FNMR at one threshold")
    fairness.add_argument("--groups", nargs="+", default=None, metavar="NAME=SET",
                          help="any grouping: a group name and its pair set (.bin file or memfile folder) each")
    fairness.add_argument("--fmr", type=float, default=1e-3,
                          help="target FMR of the global threshold, set on all groups' impostors pooled (default 1e-3)")
    fairness.add_argument("--plot", default=None, help="write the per-group ROC and FMR/FNMR bars here (PNG)")
    parser.add_argument("--sets", nargs="+", default=None,
                        help="sets to evaluate (default: all found; standard five first)")
    parser.add_argument("--arch", default=None, help="backbone name (default: inferred from the weights)")
    add_batch_size(parser)
    add_device(parser)
    add_precision(parser)
    parser.add_argument("--channels_last", action="store_true", help="channels-last memory format (with bf16)")
    parser.add_argument("--fusion", choices=FUSION_METHODS, default="pre_norm_vector_add",
                        help="how image and flip features are fused (none = no flip test)")
    parser.add_argument("--json", default=None, help="write the results as JSON here")
    parser.add_argument("--csv", default=None, help="write the results as CSV here")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.devices import resolve_device
    from facetrain.errors import ConfigError

    from facetrain.eval.verification import evaluate_checkpoint
    from facetrain.eval.verification_report import format_results, write_csv, write_json

    device = resolve_device(args.device)
    if args.val_data_path is None and args.rfw is None and args.groups is None:
        raise ConfigError("nothing to evaluate: give --val_data_path, --rfw or --groups")
    if args.rfw is not None and args.groups is not None:
        raise ConfigError("--rfw and --groups both name the groups: give one of them")
    if args.rfw is not None or args.groups is not None:
        from facetrain.eval.fairness_report import evaluate_fairness
        from facetrain.io_utils import atomic_write_json

        fairness = evaluate_fairness(args.ckpt, rfw=args.rfw, groups=args.groups, fmr=args.fmr, arch=args.arch,
                                     batch_size=args.batch_size, device=device, precision=args.precision,
                                     plot_path=args.plot, progress=not args.quiet)
        if args.val_data_path is None:
            if args.json:
                atomic_write_json(args.json, fairness)
            return 0
        if args.json:  # both asked: the fairness JSON beside the verification one
            atomic_write_json(f"{args.json.removesuffix('.json')}.fairness.json", fairness)
    results = evaluate_checkpoint(args.ckpt, args.val_data_path, args.sets, arch=args.arch, batch_size=args.batch_size,
                                  device=device, precision=args.precision, fusion=args.fusion,
                                  channels_last=args.channels_last, progress=not args.quiet)
    print(format_results(results))
    meta = {"ckpt": str(args.ckpt), "val_data_path": str(args.val_data_path), "precision": args.precision,
            "fusion": args.fusion, "protocol": "10-fold, squared L2, thresholds arange(0,4,0.01)"}
    if args.csv:
        write_csv(results, args.csv)
    if args.json:
        write_json(results, args.json, meta)
    return 0
