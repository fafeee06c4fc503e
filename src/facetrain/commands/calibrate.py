"""`facetrain calibrate --ckpt M --pairs SET [--far 1e-4] [--save]`: the threshold at a FAR, with its uncertainty."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_batch_size, add_ckpt, add_device, add_precision, add_quiet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_ckpt(parser)
    parser.add_argument("--pairs", required=True,
                        help="pair set(s) with same/different labels: a .bin file, or a folder of .bin files or "
                             "memfiles (all sets found are pooled)")
    parser.add_argument("--sets", nargs="+", default=None, help="only these sets of the --pairs folder")
    parser.add_argument("--far", type=float, default=1e-4, help="false-accept rate to calibrate at (default 1e-4)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--save", action="store_true",
                        help="store the threshold with the model (in our checkpoints; beside other files as "
                             "<file>.calibration.json), where verify/compare and facetrain.load_model find it")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    add_batch_size(parser)
    add_device(parser)
    add_precision(parser)
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.calibration_store import record_calibration
    from facetrain.devices import resolve_device
    from facetrain.eval.calibrate_model import calibrate_model
    from facetrain.eval.calibration import format_calibration
    from facetrain.io_utils import atomic_write_json

    record, result, model_path = calibrate_model(args.ckpt, args.pairs, far=args.far, sets=args.sets, level=args.level,
                                                 batch_size=args.batch_size, device=resolve_device(args.device),
                                                 precision=args.precision, progress=not args.quiet)
    print(format_calibration(result, f"{record['pairs']['path']} ({', '.join(record['pairs']['sets'])})"))
    if result.under_resolved:
        print(f"warning: only {result.far * result.impostor_pairs:.1f} false accepts expected at FAR {result.far:g} "
              f"over {result.impostor_pairs} impostor pairs: the threshold rests on a handful of pairs; use more "
              "impostor pairs or a larger FAR")
    if args.json:
        atomic_write_json(args.json, record)
    if args.save:
        print(f"threshold stored in {record_calibration(model_path, record)}")
    return 0
