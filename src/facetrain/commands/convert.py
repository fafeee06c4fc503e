"""`facetrain convert` (the seed's `python convert.py`): .bin -> memfiles / images, train.rec -> image folder."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_max_pixels, add_quiet
from pathlib import Path

from facetrain.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-r", "--rec_path", default="./faces_emore",
                        help="folder holding train.rec/.idx (or a DCFace release with record/) and/or .bin files")
    parser.add_argument("--make_validation_memfiles", action="store_true",
                        help="every .bin in the folder -> <name>.dat memfile (+ .conf, <name>_list.npy)")
    parser.add_argument("--make_image_files", action="store_true",
                        help="train.rec -> imgs/<label>/<key>.jpg (DCFace list.txt names when present); each .bin -> "
                             "<name>/imgs/<i>.jpg plus its memfile (the seed's README prepares validation data this way)")
    parser.add_argument("--swap_color_channel", action="store_true",
                        help="swap red and blue in the image files written (AdaFace's option, for loaders that expect "
                             "BGR data in files read with PIL)")
    parser.add_argument("--out", default=None, help="output folder (default: the --rec_path folder)")
    add_max_pixels(parser, "images")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from facetrain.data.tools import convert, dcface
    from facetrain.data.guards.pixel_limit import set_max_pixels

    if not (args.make_validation_memfiles or args.make_image_files):
        raise ConfigError("nothing to do: pass --make_validation_memfiles and/or --make_image_files")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: exists and is not a folder")
    set_max_pixels(args.max_pixels)
    folder, progress = Path(args.rec_path), (False if args.quiet else None)
    bins = convert.find_bins(folder)
    if args.make_image_files:
        has_rec = (folder / "train.rec").is_file() or (folder / "record" / "train.rec").is_file()
        if not has_rec and not bins:
            raise ConfigError(f"{folder}: no train.rec, record/train.rec or .bin files to unpack")
        if has_rec:
            out = dcface.dcface_to_image_folder(folder, args.out, args.swap_color_channel, progress)
            print(f"wrote {out}")
        for path in convert.bins_to_images(folder, args.out, args.swap_color_channel, progress):
            print(f"wrote {path}")
    if args.make_validation_memfiles or (args.make_image_files and bins):
        for path in convert.bins_to_memfiles(folder, args.out, progress):
            print(f"wrote {path}")
    return 0
