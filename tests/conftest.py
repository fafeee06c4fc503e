"""Shared pytest fixtures.

`one_torch_thread`: one torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`).
`trained_tinynet`: TinyNet + AdaFace trained once per session on 200 synthetic identities x 16 images
(~3 minutes on 2 idle CPU cores). The learning test checks its accuracy; the audit tests use it as the face
model that finds planted defects, so the suite pays for the training once. It trains at `--precision auto`
(bf16 on CPUs with AMX/AVX512-BF16, fp32 elsewhere); FACETRAIN_TEST_PRECISION=fp32 or bf16 forces one, so
that the tests relying on it can be checked against the model each kind of machine produces.
Under `make mutants` (mutmut sets MUTANT_UNDER_TEST) hypothesis does not shrink failures: a
mutant is killed by the first failing example, and shrinking it would cost many more runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import Phase, settings

if "MUTANT_UNDER_TEST" in os.environ:
    settings.register_profile("mutants", phases=[Phase.explicit, Phase.reuse, Phase.generate])
    settings.load_profile("mutants")


@dataclass
class TrainedModel:
    data: Path  # generated data: imgs/ and lfw.bin (held-out identities)
    checkpoint: Path  # best (else last) checkpoint
    summary: dict  # generate_dataset's summary
    test_metrics: dict  # the run's final test, per verification set


@pytest.fixture(scope="session")
def trained_tinynet(tmp_path_factory) -> TrainedModel:
    from facetrain.synthetic.generate import generate_dataset
    from facetrain.training.config import TrainConfig
    from facetrain.training.loop import train

    root = tmp_path_factory.mktemp("trained_tinynet")
    summary = generate_dataset(root / "data", num_identities=200, images_per_identity=16, seed=1, bins=True,
                               bin_names=("lfw",), pairs_per_set=300, workers=2, progress=False)
    config = TrainConfig(data_root=str(root / "data"), train_data_path="imgs", val_data_path=".",
                         arch="tinynet", head="adaface", epochs=10, lr_milestones=[6, 9], batch_size=64,
                         num_workers=1, gpus=0, val_every=10, output_dir=str(root / "run"), progress=False,
                         precision=os.environ.get("FACETRAIN_TEST_PRECISION", "auto"))
    result = train(config)
    return TrainedModel(root / "data", Path(result.best_checkpoint or result.last_checkpoint), summary,
                        result.test_metrics)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: float reductions give the same results on every machine (training tests
    compare runs bit for bit, the demo test a measured margin), and on a shared machine several OpenMP
    threads spin at every op's barrier (MTCNN's small pyramid levels: 10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
