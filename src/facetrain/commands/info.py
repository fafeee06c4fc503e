"""`facetrain info PATH [--json]`: what a dataset holds (.bin, memfile, RecordIO, image folder)."""
from __future__ import annotations

import argparse
import json

from facetrain.commands.options import add_max_pixels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help=".bin file, memfile (or its folder), train.rec (or its folder), image folder "
                                     "(root or imgs), or a folder of validation sets")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="do not decode every image (unreadable: not checked)")
    add_max_pixels(parser, "images (listed as unreadable)")


def run(args: argparse.Namespace) -> int:
    from facetrain.data.tools.info import dataset_info, format_info
    from facetrain.data.guards.pixel_limit import set_max_pixels

    set_max_pixels(args.max_pixels)
    info = dataset_info(args.path, check=not args.quick, progress=False if args.json else None)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
