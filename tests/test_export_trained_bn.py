"""Export keeps what training changes: BN running statistics and affine parameters far from their
defaults, checked against the in-memory model that was saved (not the one the exporter reloads)."""
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from facetrain.checkpoint import save_checkpoint
from facetrain.cli import main
from facetrain.models import build_model


@pytest.fixture(scope="module")
def trained_bn(tmp_path_factory):
    """mobilefacenet whose BN layers saw shifted, scaled batches (running stats far from 0/1)."""
    torch.manual_seed(0)
    model = build_model("mobilefacenet").train()
    with torch.no_grad():
        for m in model.modules():  # cumulative averages: one batch sets the statistics to its own
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        model(torch.randn(4, 3, 112, 112) * 3 + 1.5)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    folder = tmp_path_factory.mktemp("export_bn")
    save_checkpoint(folder / "trained.ckpt", model)
    assert main(["export", "--ckpt", str(folder / "trained.ckpt"), "--onnx", str(folder / "m.onnx"),
                 "--safetensors", str(folder / "m.safetensors")]) == 0
    return model, folder


def _bn_layers(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_the_statistics_are_not_the_defaults(trained_bn):
    model, _ = trained_bn
    bns = _bn_layers(model)
    assert bns and all(m.num_batches_tracked.item() == 1 for m in bns)
    assert max((m.running_mean.abs().max().item() for m in bns)) > 0.3
    assert max(((m.running_var - 1).abs().max().item() for m in bns)) > 0.3


def test_onnx_reproduces_the_trained_model(trained_bn):
    model, folder = trained_bn
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32))
    with torch.no_grad():
        embedding, norm = model(x)
        fresh = build_model("mobilefacenet").eval()
        fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "running" not in k}, strict=False)
        default_embedding, _ = fresh(x)
    session = onnxruntime.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    got_embedding, got_norm = session.run(["embedding", "norm"], {"input": x.numpy()})
    np.testing.assert_allclose(got_embedding, embedding.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_norm, norm.numpy(), rtol=1e-4)
    # the same weights with default statistics give other embeddings: the check above can tell
    assert np.abs(default_embedding.numpy() - embedding.numpy()).max() > 1e-2


def test_safetensors_hold_the_trained_statistics(trained_bn):
    model, folder = trained_bn
    saved = load_file(str(folder / "m.safetensors"))
    for name, value in model.state_dict().items():
        assert torch.equal(saved[name], value), name
