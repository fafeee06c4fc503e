"""The recipe learns: TinyNet + AdaFace trained on synthetic identities verifies unseen identities.

The training is the session fixture `trained_tinynet` (tests/conftest.py, ~3 minutes on 2 CPU cores),
shared with the audit tests; the demo does the same at full size.
"""
import pytest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_small_backbone_beats_90_percent_on_held_out_identities(trained_tinynet):
    accuracy = trained_tinynet.test_metrics["lfw"]["accuracy"]
    baseline = trained_tinynet.summary["verification_sets"]["lfw"]["raw_pixel_accuracy"]
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.4f} (raw pixels {baseline:.4f})"
    assert baseline < 0.70
