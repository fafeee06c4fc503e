"""The recipe learns: TinyNet + AdaFace trained on synthetic identities verifies unseen identities.

The slowest test of the suite (~3 minutes on 2 CPU cores); the demo does the same at full size.
"""
import pytest

from facetrain.data.synthetic.generate import generate_dataset
from facetrain.train.config import TrainConfig
from facetrain.train.loop import train


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_small_backbone_beats_90_percent_on_held_out_identities(tmp_path):
    summary = generate_dataset(tmp_path / "data", num_identities=200, images_per_identity=16, seed=1, bins=True,
                               bin_names=("lfw",), pairs_per_set=300, workers=2, progress=False)
    config = TrainConfig(data_root=str(tmp_path / "data"), train_data_path="imgs", val_data_path=".",
                         arch="tinynet", head="adaface", epochs=10, lr_milestones=[6, 9], batch_size=64,
                         num_workers=1, gpus=0, val_every=10, output_dir=str(tmp_path / "run"), progress=False)
    result = train(config)
    accuracy = result.test_metrics["lfw"]["accuracy"]
    baseline = summary["verification_sets"]["lfw"]["raw_pixel_accuracy"]
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.4f} (raw pixels {baseline:.4f})"
    assert baseline < 0.70
