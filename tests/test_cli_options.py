"""One way to say each thing: every verb that loads a model takes --ckpt, every verb that picks a
device takes --device (auto by default), every verb with progress bars takes --quiet."""
import pytest
import torch

from facetrain.cli import VERBS, build_parser


def _options(verb: str) -> dict[str, object]:
    parser, _ = build_parser(verb)
    return {flag: action for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_shared_options_have_one_spelling(verb):
    options = _options(verb)
    assert "--ckpt_path" not in options or options["--ckpt_path"] is options["--ckpt"]  # ijb keeps AdaFace's alias
    assert not ({"--checkpoint", "--model"} & set(options))
    if "--device" in options:
        assert options["--device"].default == "auto"
    if "--no_progress" in options:
        assert options["--no_progress"] is options["--quiet"]


@pytest.mark.parametrize("verb", ["compare", "embed", "eval", "export", "ijb"])
def test_model_verbs_take_ckpt(verb):
    assert "--ckpt" in _options(verb)


def test_auto_device_resolves_to_the_cpu_without_cuda_and_to_the_first_gpu_with_it(monkeypatch):
    from facetrain.devices import resolve_device
    from facetrain.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu" and resolve_device(None).type == "cpu"
    assert str(resolve_device("cpu")) == "cpu"
    with pytest.raises(ConfigError, match="this machine has no cuda device"):  # not a failure at the first tensor
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0) and resolve_device(None) == torch.device("cuda", 0)
    assert str(resolve_device("cuda:1")) == "cuda:1"
    with pytest.raises(ConfigError, match="this machine has 2 cuda device"):
        resolve_device("cuda:2")
