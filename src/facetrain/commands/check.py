"""`facetrain check PATH [--ckpt M]`: is a benchmark copy or a dataset what the model expects?"""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_batch_size, add_ckpt, add_device, add_quiet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a .bin, a memfile, a folder of .bin files / memfiles, an image folder or a RecordIO")
    add_ckpt(parser, required=False)
    parser.add_argument("--sample", type=int, default=64, help="images sampled for the alignment check (default 64)")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    add_batch_size(parser)
    add_device(parser)
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.devices import resolve_device
    from facetrain.hygiene.dataset_check import check_dataset, format_check
    from facetrain.io_utils import atomic_write_json

    report = check_dataset(args.path, args.ckpt, sample=args.sample, batch_size=args.batch_size,
                           device=resolve_device(args.device), progress=not args.quiet)
    print(format_check(report))
    if args.json:
        atomic_write_json(args.json, report)
    return 0
