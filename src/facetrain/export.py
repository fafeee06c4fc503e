"""Export a backbone for deployment: ONNX (dynamic batch; outputs `embedding` and `norm`) and
safetensors (the backbone state_dict with AdaFace's key names, no pickle).

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): the newer torch.export-based one
needs `onnxscript`, which is not a dependency, and these backbones are plain feed-forward nets
that the classic exporter handles exactly.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_path, atomic_write_bytes

INPUT_NAME, OUTPUT_NAMES = "input", ("embedding", "norm")


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = 17) -> None:
    """(B,3,112,112) BGR normalised input -> embedding (B,512) unit length, norm (B,1); B is dynamic."""
    model = model.to("cpu").eval()
    example = torch.zeros(2, 3, 112, 112)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    # built in memory: torch's exporter cannot open a file name that is not UTF-8
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (see the module docstring); silence its deprecation notices.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=opset, dynamo=False, external_data=False)
    atomic_write_bytes(path, buffer.getvalue())


def verify_onnx(model: nn.Module, path: str | os.PathLike, batch_size: int = 3, seed: int = 0) -> float:
    """Largest difference between onnxruntime and torch on random inputs: absolute for the unit
    embedding, relative for the norm (whose scale, ~1e3 for a random net, is arbitrary)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(Path(path).read_bytes(), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (batch_size, 3, 112, 112)).astype(np.float32))
    with torch.inference_mode():
        embedding, norm = (t.numpy() for t in model.to("cpu").eval()(x))
    got_embedding, got_norm = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
    return float(max(np.abs(got_embedding - embedding).max(), (np.abs(got_norm - norm) / np.abs(norm)).max()))


def export_safetensors(model: nn.Module, path: str | os.PathLike, arch: str | None = None) -> None:
    """The backbone's state_dict (AdaFace key names, no `model.` prefix); metadata records the arch."""
    from safetensors.torch import save_file

    arch = arch or getattr(model, "arch", None)
    if arch is None:
        raise ConfigError("export_safetensors needs the architecture name (model.arch or arch=...)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"arch": arch, "format": "facetrain-backbone"})
