"""Seed entry point: `python main.py <AdaFace flags>` is `facetrain train <AdaFace flags>`
(also as `torchrun --nproc_per_node N main.py ...`)."""
import sys

from facetrain.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
