"""`facetrain embed DIR --ckpt P --out FILE.npz`: embeddings, norms and file list of a folder of faces."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="folder of aligned 112x112 faces (searched recursively), or raw photos with --align")
    parser.add_argument("--ckpt", required=True, help="checkpoint file, or a released model name such as ir_50")
    parser.add_argument("--out", required=True, help="output .npz (embeddings, norms, paths, failed_paths, failed_errors)")
    parser.add_argument("--align", action="store_true", help="detect and align each photo with MTCNN first")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from facetrain.infer import embed_folder, load_pretrained_model, save_embeddings

    model = load_pretrained_model(args.ckpt, device=args.device)
    result = embed_folder(model, args.folder, batch_size=args.batch_size, device=args.device,
                          precision=args.precision, align=args.align, progress=not args.no_progress)
    save_embeddings(args.out, result)
    print(f"embedded {len(result.paths)} images of {args.folder} -> {args.out} "
          f"({result.embeddings.shape[1]}-d); failed: {len(result.failed)}")
    for _, error in result.failed:
        print(f"  {error}")
    return 0
