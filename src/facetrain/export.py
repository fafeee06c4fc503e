"""Export a backbone for deployment: ONNX (dynamic batch; outputs `embedding` and `norm`) and
safetensors (the backbone state_dict with AdaFace's key names, no pickle).

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): the newer torch.export-based one
needs `onnxscript`, which is not a dependency, and these backbones are plain feed-forward nets
that the classic exporter handles exactly.
"""
from __future__ import annotations

import io
import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_write_bytes

INPUT_NAME, OUTPUT_NAMES = "input", ("embedding", "norm")


ONNX_TOLERANCE = 1e-4


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = 17, verify: bool = False) -> float | None:
    """(B,3,112,112) BGR normalised input -> embedding (B,512) unit length, norm (B,1); B is dynamic.

    With `verify`, onnxruntime is compared with torch (`verify_onnx`) before the file is committed: a
    difference over ONNX_TOLERANCE, or NaN, is a ConfigError and leaves nothing at `path`. Returns it."""
    model = model.to("cpu").eval()
    example = torch.zeros(2, 3, 112, 112)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    buffer = io.BytesIO()  # built in memory: torch's exporter cannot open a file name that is not UTF-8
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (see the module docstring); silence its deprecation notices.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=opset, dynamo=False, external_data=False)
    diff = None
    if verify:
        diff = verify_onnx(model, buffer.getvalue())
        if not diff <= ONNX_TOLERANCE:  # NaN compares false both ways: it must fail the check
            raise ConfigError(f"{path}: onnxruntime differs from torch by {diff:.2e} (> {ONNX_TOLERANCE:g}); "
                              "nothing was written")
    atomic_write_bytes(path, buffer.getvalue())
    return diff


def verify_onnx(model: nn.Module, onnx: bytes | str | os.PathLike, batch_size: int = 3, seed: int = 0) -> float:
    """Largest difference between onnxruntime and torch on random inputs: absolute for the unit
    embedding, relative for the norm (whose scale, ~1e3 for a random net, is arbitrary). `onnx`: the
    model's bytes or its file (read by Python, whatever its name)."""
    import onnxruntime

    model_bytes = onnx if isinstance(onnx, bytes) else Path(onnx).read_bytes()
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (batch_size, 3, 112, 112)).astype(np.float32))
    with torch.inference_mode():
        embedding, norm = (t.numpy() for t in model.to("cpu").eval()(x))
    got_embedding, got_norm = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
    return float(max(np.abs(got_embedding - embedding).max(), (np.abs(got_norm - norm) / np.abs(norm)).max()))


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors file of `state` with `metadata`, byte for byte the same for the same input.

    safetensors writes its metadata map in an order that changes from process to process; the header is
    written again here with the metadata keys sorted (the tensor entries and data keep safetensors' order).
    """
    from safetensors.torch import save

    data = save(state)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header = {"__metadata__": dict(sorted(metadata.items())), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data section to 8 bytes
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def export_safetensors(model: nn.Module, path: str | os.PathLike, arch: str | None = None) -> None:
    """The backbone's state_dict (AdaFace key names, no `model.` prefix); metadata records the arch.
    The same weights give the same bytes, written with the default file mode as every other output."""
    arch = arch or getattr(model, "arch", None)
    if arch is None:
        raise ConfigError("export_safetensors needs the architecture name (model.arch or arch=...)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(state, {"arch": arch, "format": "facetrain-backbone"}))
