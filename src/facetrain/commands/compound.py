"""`facetrain compound --list_datasets A B ... --final_path OUT [--copy] [--keep_apart]`."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_quiet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list_datasets", nargs="+", required=True,
                        help="image folders to merge (each `<x>/imgs`, `<x>` holding imgs/, or a folder of identities)")
    parser.add_argument("--final_path", required=True,
                        help="output image folder; the seed passes `<root>/imgs` (any other name gets imgs/ inside)")
    parser.add_argument("--copy", action="store_true", help="copy images instead of absolute symlinks")
    parser.add_argument("--keep_apart", action="store_true",
                        help="keep each dataset's identities as separate classes (folders renamed d<k>_<identity>)")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.data.tools.compound import compound_datasets, format_report

    report = compound_datasets(args.list_datasets, args.final_path, copy=args.copy, keep_apart=args.keep_apart,
                               progress=False if args.quiet else None)
    print(format_report(report))
    return 0
