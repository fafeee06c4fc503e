"""`facetrain export --ckpt P --onnx OUT.onnx [--safetensors OUT.safetensors]`."""
from __future__ import annotations

import argparse

from facetrain.commands.options import add_ckpt
from facetrain.option_checks import between, ranged

from facetrain.errors import ConfigError

# torch.onnx._constants: ONNX_MIN_OPSET .. ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET (export uses dynamo=False)
OPSETS = (7, 20)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_ckpt(parser)
    parser.add_argument("--onnx", help="ONNX output: input (B,3,112,112) BGR in [-1,1] -> embedding, norm")
    parser.add_argument("--safetensors", help="safetensors output of the backbone state_dict (AdaFace key names)")
    ranged(parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)"),
           between(*OPSETS, "the opsets torch's TorchScript-based ONNX exporter writes"))
    parser.add_argument("--no_verify", action="store_true", help="skip the onnxruntime-vs-torch check")


def run(args: argparse.Namespace) -> int:
    if not (args.onnx or args.safetensors):
        raise ConfigError("nothing to export: give --onnx and/or --safetensors")
    from facetrain.calibration_store import record_calibration
    from facetrain.eval.finite import refuse_non_finite_weights
    from facetrain.export import export_onnx, export_safetensors
    from facetrain.infer import load_model

    model = load_model(args.ckpt, device="cpu")
    refuse_non_finite_weights(model)  # an exported NaN model would fail every user silently
    if args.onnx:
        diff = export_onnx(model, args.onnx, opset=args.opset, verify=not args.no_verify)
        print(f"onnx: {args.onnx}" + ("" if diff is None else f" (onnxruntime vs torch: max difference {diff:.1e})"))
    if args.safetensors:
        export_safetensors(model, args.safetensors)
        print(f"safetensors: {args.safetensors} (arch {model.arch})")
    if model.calibration is not None:  # the calibrated threshold travels with the exported files
        for path in filter(None, (args.onnx, args.safetensors)):
            print(f"threshold: {record_calibration(path, model.calibration)}")
    return 0
