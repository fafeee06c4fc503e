"""`facetrain make-bin`: an InsightFace-format .bin verification set from an image folder of aligned faces."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="aligned 112x112 faces as FOLDER/<identity>/<image> (or FOLDER/imgs/...)")
    parser.add_argument("--out", required=True, help="output .bin")
    parser.add_argument("--pairs", type=int, default=3000, help="pairs to draw, half genuine (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same pairs")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="IDS",
                        help="identity folder names, or text files listing one a line, never to use "
                             "(e.g. the training identities)")
    parser.add_argument("--pairs_file", help="use these pairs instead: `path_a path_b 1|0` a line, relative to FOLDER")


_LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv", ".tsv")


def _excluded(items: list[str]) -> set[str]:
    """Identity names: each item is a file listing them, or a name. An item that looks like a path but is
    no file is an error: taken as a name, it would exclude nothing and let training identities leak in."""
    import os
    from pathlib import Path

    from facetrain.data.tools.make_bin import read_text_file
    from facetrain.errors import ConfigError

    names: set[str] = set()
    for item in items:
        path = Path(item)
        if path.is_file():
            names |= set(read_text_file(path).split())
        elif "/" in item or os.sep in item or path.suffix.lower() in _LIST_SUFFIXES:
            raise ConfigError(f"--exclude {item}: no such file (a list of identities was meant?)")
        else:
            names.add(item)
    return names


def run(args: argparse.Namespace) -> int:
    from facetrain.data.tools.make_bin import make_bin
    from facetrain.errors import ConfigError

    from facetrain.data.formats.verification_set import MIN_PAIRS

    if args.pairs < MIN_PAIRS:
        raise ConfigError(f"--pairs must be >= {MIN_PAIRS} (the 10-fold protocol), got {args.pairs}")
    summary = make_bin(args.folder, args.out, args.pairs, args.seed, frozenset(_excluded(args.exclude)),
                       args.pairs_file)
    print(f"wrote {args.out}: {summary['pairs']} pairs ({summary['genuine']} genuine) of {summary['images']} images, "
          f"{summary['identities']} identities")
    return 0
