"""Calibrated thresholds: the threshold at a FAR and its intervals by hand, the exact binomial helpers
against closed forms and published values, under-resolved FARs refused or warned about, and
`facetrain calibrate` end to end: stored in our checkpoint or beside another model file, then used
(and named) by `facetrain.load_model`, `facetrain.verify` and `facetrain compare`."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import facetrain
from facetrain.calibration_store import SIDECAR_SUFFIX, record_calibration, stored_calibration
from facetrain.checkpoint import save_checkpoint
from facetrain.cli import main
from facetrain.data.formats.bin import write_bin
from facetrain.errors import ConfigError
from facetrain.eval.binomial import betainc, binomial_cdf, clopper_pearson, quantile_rank_interval
from facetrain.eval.calibration import threshold_at_far
from facetrain.models import build_model


def test_threshold_by_hand():
    impostor = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    genuine = np.array([0.75, 0.85, 0.95, 0.99])
    result = threshold_at_far(genuine, impostor, far=0.2)
    # 2 of 10 impostors may pass: 0.9 and 1.0; the threshold is the next float above 0.8
    assert result.threshold == np.nextafter(0.8, 1.0)
    assert (result.false_accepts, result.impostor_pairs) == (2, 10) and result.achieved_far == 0.2
    assert (result.true_accepts, result.tar) == (3, 0.75)  # 0.85, 0.95, 0.99
    # ties cannot be split: ten equal impostors at FAR 0.2 accept none of them
    tied = threshold_at_far(genuine, np.full(10, 0.5), far=0.2)
    assert tied.false_accepts == 0 and tied.threshold == np.nextafter(0.5, 1.0) and tied.true_accepts == 4
    # 0.1 * 30 is 2.9999999999999996 in floats: still 3 false accepts allowed
    assert threshold_at_far(genuine, np.arange(30) / 30.0, far=0.1).false_accepts == 3


def test_binomial_helpers_against_closed_forms_and_published_values():
    # I_x(1, b) = 1 - (1 - x)^b and I_x(a, 1) = x^a
    assert betainc(1, 7, 0.3) == pytest.approx(1 - 0.7**7, rel=1e-12)
    assert betainc(5, 1, 0.4) == pytest.approx(0.4**5, rel=1e-12)
    assert binomial_cdf(2, 10, 0.5) == pytest.approx((1 + 10 + 45) / 1024, rel=1e-12)
    # no successes: upper bound 1 - (alpha/2)^(1/n)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12))
    # 3 of 10: the textbook exact interval (0.0667, 0.6525)
    low, high = clopper_pearson(3, 10)
    assert low == pytest.approx(0.06674, abs=1e-5) and high == pytest.approx(0.65245, abs=1e-5)
    assert clopper_pearson(10, 10)[1] == 1.0
    # the median of 10 samples: x(2) .. x(9), coverage 1 - 2 * 11/1024 = 97.9 %
    assert quantile_rank_interval(10, 0.5) == (2, 9)
    # millions of impostors stay fast and sensible
    low, high = clopper_pearson(120, 8_000_000)
    assert low < 120 / 8_000_000 < high and high - low < 1e-5


def test_threshold_interval_contains_the_threshold_and_opens_when_too_few_impostors():
    rng = np.random.default_rng(0)
    impostor, genuine = rng.normal(0, 0.1, 100_000), rng.normal(0.6, 0.1, 1000)
    result = threshold_at_far(genuine, impostor, far=1e-3)
    lo, hi = result.threshold_interval
    assert lo < result.threshold < hi
    # the true 0.999 quantile of N(0, 0.1) is 0.309: inside the interval, as it should be 95 % of the time
    assert lo < 0.309 < hi and hi - lo < 0.05
    low_far, high_far = result.achieved_far_interval
    assert low_far < 1e-3 < high_far
    assert not result.under_resolved
    few = threshold_at_far(genuine, impostor[:3000], far=1e-3)  # 3 false accepts expected
    assert few.under_resolved and few.threshold_interval[1] is None  # no order statistic bounds it above


def test_far_that_cannot_be_resolved_is_refused():
    with pytest.raises(ConfigError, match="cannot be resolved with 5000 impostor pairs.*at least 10000"):
        threshold_at_far(np.ones(5), np.zeros(5000), far=1e-4)
    for far in (0.0, 1.0, -1e-3, float("nan")):
        with pytest.raises(ConfigError, match="between 0 and 1"):
            threshold_at_far(np.ones(5), np.zeros(5000), far=far)


@pytest.fixture(scope="module")
def model_and_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    torch.manual_seed(0)
    model = build_model("tinynet")
    save_checkpoint(root / "model.ckpt", model)
    rng = np.random.default_rng(1)
    bases = rng.integers(0, 256, (60, 112, 112, 3), dtype=np.uint8)
    images, issame = [], []
    for k in range(300):  # pairs of the same base (jittered) or of two bases
        a = int(rng.integers(60))
        same = k % 2 == 0
        b = a if same else int((a + 1 + rng.integers(59)) % 60)
        jitter = rng.integers(-20, 21, (2, 112, 112, 3))
        images += [np.clip(bases[a] + jitter[0], 0, 255).astype(np.uint8),
                   np.clip(bases[b] + jitter[1], 0, 255).astype(np.uint8)]
        issame.append(same)
    write_bin(root / "pairs.bin", images, issame, ext=".png")
    return root


def test_calibrate_cli_stores_the_threshold_in_the_checkpoint_and_verify_uses_it(model_and_pairs, capsys):
    root = model_and_pairs
    ckpt, pairs = root / "model.ckpt", root / "pairs.bin"
    assert facetrain.load_model(ckpt).threshold_cosine is None
    assert main(["calibrate", "--ckpt", str(ckpt), "--pairs", str(pairs), "--far", "0.05", "--save", "--quiet",
                 "--device", "cpu", "--json", str(root / "cal.json")]) == 0
    printed = capsys.readouterr().out
    assert "150 impostor and 150 genuine pairs" in printed and "threshold (cosine) at FAR 0.05" in printed
    assert "warning" in printed  # 7.5 false accepts expected: under-resolved
    record = json.loads((root / "cal.json").read_text())
    assert record["impostor_pairs"] == 150 and record["false_accepts"] <= 7 and record["pairs"]["sets"] == ["pairs"]
    model = facetrain.load_model(ckpt)
    assert model.threshold_cosine == record["threshold"]
    assert "calibrated at FAR 0.05" in model.threshold_source and record["pairs"]["sha256"][:12] in model.threshold_source
    face = Image.fromarray(data.astronaut()[80:192, 180:292])  # any 112x112 RGB: taken as aligned
    result = facetrain.verify(model, face, face)
    assert result.threshold == record["threshold"] and result.same and "calibrated" in result.threshold_source
    assert facetrain.verify(model, face, face, threshold=0.3).threshold_source == "given"
    photo = root / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    assert main(["compare", str(photo), str(photo), "--ckpt", str(ckpt), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"threshold {record['threshold']:.4f}, calibrated at FAR 0.05" in printed
    assert "same person (similarity >= threshold): [0]-[1]" in printed
    # an export carries it: a sidecar bound to the exported file, found when that file is loaded
    exported = root / "model.safetensors"
    assert main(["export", "--ckpt", str(ckpt), "--safetensors", str(exported)]) == 0
    assert f"threshold: {exported}{SIDECAR_SUFFIX}" in capsys.readouterr().out
    assert facetrain.load_model(exported).threshold_cosine == record["threshold"]


def test_other_model_files_get_a_sidecar_that_only_applies_to_them(model_and_pairs, tmp_path, capsys):
    from safetensors.torch import save_file

    model = build_model("tinynet")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    record = {"threshold": 0.42, "far": 1e-3, "tar": 0.9, "pairs": {"path": "x.bin", "sha256": "ab" * 32}}
    assert record_calibration(path, record) == tmp_path / f"model.safetensors{SIDECAR_SUFFIX}"
    assert stored_calibration(path)["threshold"] == 0.42
    assert facetrain.load_model(path).threshold_cosine == 0.42
    with torch.no_grad():  # another model written over the file: its sidecar no longer applies
        next(model.parameters()).add_(1.0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    assert stored_calibration(path) is None and facetrain.load_model(path).threshold_cosine is None


def test_calibrate_refuses_bad_flags_in_one_line(model_and_pairs, capsys):
    root = model_and_pairs
    for far in ("0", "1.5", "nan", "1e-6"):
        assert main(["calibrate", "--ckpt", str(root / "model.ckpt"), "--pairs", str(root / "pairs.bin"),
                     "--far", far, "--quiet", "--device", "cpu"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
