import argparse
import builtins
import os
import pickle
import sys
import types

import pytest
import torch

from facetrain.checkpoint import InertObject, load_backbone, load_checkpoint, save_checkpoint
from facetrain.models import infer_arch
from facetrain.errors import ConfigError
from facetrain.heads import build_head
from facetrain.models import build_model


@pytest.fixture(scope="module")
def trained_mfn():
    """A MobileFaceNet with non-default BN statistics, so a round-trip that skipped buffers would show."""
    torch.manual_seed(0)
    model = build_model("mobilefacenet").train()
    with torch.no_grad():
        model(torch.randn(2, 3, 112, 112))
    return model.eval()


@pytest.fixture(scope="module")
def faces():
    return torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))


def test_round_trip_is_bit_identical(tmp_path, trained_mfn, faces):
    head = build_head("adaface", 512, 7)
    head.batch_mean.fill_(17.5)
    extra = {"epoch": 3, "global_step": 120, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
             "rng": {"torch": torch.get_rng_state(), "python": (3, (1, 2, 3), None)}}
    path = tmp_path / "run" / "last.ckpt"
    save_checkpoint(path, trained_mfn, head, extra, hyper_parameters={"lr": 0.1})
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary left behind

    raw = torch.load(path, weights_only=True)  # AdaFace's tools and plain torch read it too
    assert "model.conv_sep.0.weight" in raw["state_dict"] and "head.batch_mean" in raw["state_dict"]
    assert raw["hyper_parameters"]["arch"] == "mobilefacenet"
    assert raw["hyper_parameters"]["head"] == "adaface" and raw["hyper_parameters"]["class_num"] == 7
    assert raw["hyper_parameters"]["lr"] == 0.1

    model, info = load_backbone(path)
    assert info["arch"] == "mobilefacenet" and not model.training
    assert info["facetrain"]["extra"]["global_step"] == 120
    torch.testing.assert_close(info["facetrain"]["extra"]["rng"]["torch"], extra["rng"]["torch"])
    assert info["head_state_dict"]["batch_mean"].item() == 17.5
    with torch.no_grad():
        expected, got = trained_mfn(faces), model(faces)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_save_refuses_objects_weights_only_cannot_read(tmp_path, trained_mfn):
    import numpy as np

    with pytest.raises(TypeError, match=r"\['rng'\]\['numpy'\].*numpy.ndarray"):
        save_checkpoint(tmp_path / "x.ckpt", trained_mfn, None, {"rng": {"numpy": np.zeros(3)}})
    assert not any(tmp_path.iterdir())


def test_ctrl_c_inside_the_write_is_a_keyboard_interrupt_and_leaves_no_file(tmp_path, trained_mfn, monkeypatch):
    """torch's archive writer turns an exception inside a write into RuntimeError("unexpected pos")
    while closing; the caller must see the Ctrl-C it was (the CLI's one line), not that."""
    import facetrain.io_utils as io_utils

    real_open_write, writes = io_utils.open_write, []

    class Interrupting:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            writes.append(len(data))
            if len(writes) == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("facetrain.checkpoint.open_write", lambda *a: Interrupting(real_open_write(*a)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.ckpt", trained_mfn)
    assert len(writes) >= 3 and not any(tmp_path.iterdir())


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _register_fake_module(monkeypatch, name, **attrs):
    """Make `name` importable (parents included) so pickle records its classes under that path."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    module = types.ModuleType(name)
    for key, value in attrs.items():
        value.__module__, value.__qualname__ = name, key
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_official_lightning_checkpoint_loads_strictly(tmp_path, monkeypatch, trained_mfn):
    """Saved the way PyTorch-Lightning saves AdaFace runs: Lightning classes and a Namespace inside."""

    class AttributeDict(dict):
        pass

    class ModelCheckpoint:
        pass

    class TrainerFn:
        def __init__(self, value):
            self.value = value

        def __reduce__(self):
            return (TrainerFn, (self.value,))

    _register_fake_module(monkeypatch, "pytorch_lightning.utilities.parsing", AttributeDict=AttributeDict)
    _register_fake_module(monkeypatch, "pytorch_lightning.callbacks.model_checkpoint", ModelCheckpoint=ModelCheckpoint)
    _register_fake_module(monkeypatch, "pytorch_lightning.trainer.states", TrainerFn=TrainerFn)
    head = build_head("adaface", 512, 5)
    state = {f"model.{k}": v for k, v in trained_mfn.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    official = {
        "epoch": 25, "global_step": 1000, "pytorch-lightning_version": "1.8.6",
        "state_dict": state,
        "hyper_parameters": argparse.Namespace(arch="mobilefacenet", head="adaface", m=0.4, h=0.333),
        "hparams": AttributeDict(arch="mobilefacenet", lr=0.1),
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.9)}},
        "loops": {"fn": TrainerFn("fit")},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}],
        "lr_schedulers": [{"milestones": {8: 1}}],
    }
    path = tmp_path / "adaface_official.ckpt"
    torch.save(official, path)
    for name in list(sys.modules):
        if name.startswith("pytorch_lightning"):
            monkeypatch.delitem(sys.modules, name)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what a plain safe load says about such files

    loaded = load_checkpoint(path)
    assert loaded["hyper_parameters"] == {"arch": "mobilefacenet", "head": "adaface", "m": 0.4, "h": 0.333}
    assert loaded["hparams"] == {"arch": "mobilefacenet", "lr": 0.1}
    assert isinstance(loaded["loops"]["fn"], InertObject) and loaded["loops"]["fn"].args == ("fit",)
    model, info = load_backbone(path, arch="mobilefacenet")
    assert info["hyper_parameters"]["head"] == "adaface"
    assert set(info["head_state_dict"]) == {"kernel", "t", "batch_mean", "batch_std"}
    assert _same_weights(model, trained_mfn)


class _WritesFile:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func", ["open", "system"])
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, func):
    marker = tmp_path / "pwned"
    payload = (builtins.open, (str(marker), "w")) if func == "open" else (os.system, (f"touch {marker}",))
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _WritesFile(*payload)}, path)
    with pytest.raises(ConfigError, match="evil.ckpt"):
        load_checkpoint(path)
    with pytest.raises(ConfigError, match="evil.ckpt"):
        load_backbone(path)
    assert not marker.exists()


def test_lightning_named_callables_are_never_called(tmp_path, monkeypatch):
    """Stand-ins replace even Lightning-module globals, so a crafted 'Lightning' reducer cannot act."""
    marker = tmp_path / "pwned"

    def touch(target):
        open(target, "w").close()

    _register_fake_module(monkeypatch, "pytorch_lightning.evil", touch=touch)
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": _WritesFile(touch, (str(marker),))}, path)
    monkeypatch.delitem(sys.modules, "pytorch_lightning.evil")
    loaded = load_checkpoint(path)
    assert isinstance(loaded["payload"], InertObject)
    assert not marker.exists()


def test_arch_mismatch_names_both(tmp_path, trained_mfn):
    path = tmp_path / "mfn.pt"
    torch.save(trained_mfn.state_dict(), path)  # a bare state_dict, no prefix
    with pytest.raises(ConfigError, match=r"mfn\.pt: holds a mobilefacenet backbone.*ir_50"):
        load_backbone(path, arch="ir_50")
    model, info = load_backbone(path)
    assert info["arch"] == "mobilefacenet"


def test_strict_loading_reports_missing_weights(trained_mfn):
    state = dict(trained_mfn.state_dict())
    del state["output_layer.3.weight"]
    with pytest.raises(ConfigError, match="do not fit mobilefacenet.*output_layer.3.weight"):
        load_backbone(state, arch="mobilefacenet")


@pytest.mark.parametrize("arch", ["ir_18", "ir_50", "ir_se_50", "ir_101", "ir_152", "mobilefacenet", "tinynet"])
def test_arch_is_inferred_from_keys_and_shapes(arch):
    with torch.device("meta"):
        state = build_model(arch).state_dict()
    assert infer_arch(state) == arch
    assert infer_arch({f"model.{k}": v for k, v in state.items()}) is None  # prefix must be stripped first


def test_safetensors_and_prefixed_state_dicts(tmp_path, trained_mfn):
    from safetensors.torch import save_file

    path = tmp_path / "mfn.safetensors"
    save_file({k: v.contiguous() for k, v in trained_mfn.state_dict().items()}, path)
    model, _ = load_backbone(path)
    ddp_style, _ = load_backbone({f"module.{k}": v for k, v in trained_mfn.state_dict().items()})
    assert _same_weights(model, trained_mfn) and _same_weights(ddp_style, trained_mfn)


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing.ckpt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="junk.ckpt"):
        load_checkpoint(junk)


@pytest.mark.parametrize("content", [b"a checkpoint\n", b"\x80\x02]q\x00.", b"", b"PK\x03\x04 not a zip"])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys, content):
    from facetrain.cli import main

    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    assert main(["embed", str(tmp_path), "--ckpt", str(path), "--out", str(tmp_path / "e.npz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}") and not (tmp_path / "e.npz").exists()
