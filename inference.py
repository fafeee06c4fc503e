"""Seed entry point: `python inference.py [IMAGES...] [--ckpt P]` prints the similarity matrix of the
images (default: face_alignment/test_images/*). Also importable as in the seed:
`from inference import load_pretrained_model, to_input`."""
import argparse
import sys
from pathlib import Path

from facetrain.infer import load_pretrained_model, to_input

__all__ = ["load_pretrained_model", "to_input"]

TEST_IMAGES = Path(__file__).resolve().parent / "face_alignment" / "test_images"


def main(argv=None) -> int:
    import torch

    from facetrain.alignment.aligner import FaceAligner
    from facetrain.commands.options import add_detector
    from facetrain.compare import compare_images
    from facetrain.errors import FacetrainError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help="photos to compare (default: the sample images)")
    parser.add_argument("--ckpt", "--arch", dest="ckpt", default="ir_50",
                        help="released model name (ir_50 -> pretrained/adaface_ir50_ms1mv2.ckpt) or checkpoint path")
    add_detector(parser)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    images = args.images or sorted(str(p) for p in TEST_IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    try:
        model = load_pretrained_model(args.ckpt, device=args.device)
        _, similarity = compare_images(model, images, FaceAligner(args.device, detector=args.detector), args.device)
    except FacetrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    torch.set_printoptions(precision=4)
    print(torch.from_numpy(similarity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
