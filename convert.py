"""Seed entry point: `python convert.py --rec_path DIR --make_validation_memfiles | --make_image_files
[--swap_color_channel]`, the same as `facetrain convert`."""
import sys

from facetrain.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
