"""Merge image-folder datasets (seed script): `--list_datasets A B ... --final_path OUT/imgs [--copy] [--keep_apart]`.
Same-named identities merge into one class; images are prefixed d<k>_; see `facetrain compound --help`."""
import sys

from facetrain.cli import main

if __name__ == "__main__":
    sys.exit(main(["compound", *sys.argv[1:]]))
