"""The Python API of README's example, on a real photo and a run trained here: the checkpoint carries
its validation threshold, `verify` uses it, and `align`/`embed` agree with the seed's API."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import facetrain
from facetrain.alignment.aligner import get_aligned_face
from facetrain.cli import main
from facetrain.errors import ConfigError, DataError
from facetrain.infer import to_input
from train_fixtures import make_dataset, train_args


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = make_dataset(tmp_path_factory.mktemp("faces"))
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *train_args(root, out, "--epochs", "1", "--limit_train_batches", "3")]) == 0
    torch.set_num_threads(threads)
    return out


def test_api_is_reachable_from_the_package():
    assert set(facetrain.__all__) == {"load_model", "align", "align_all", "embed", "verify", "train", "evaluate"}
    assert callable(facetrain.verify)
    with pytest.raises(AttributeError):
        facetrain.not_a_function


def test_align_train_and_load_model_are_plain_functions_whatever_is_imported():
    """`facetrain.align` and `facetrain.train` are API functions, not packages (those are
    facetrain.alignment and facetrain.training), and there is one model loader: the seed's
    `load_pretrained_model` goes through it."""
    import inspect

    import facetrain.alignment.aligner  # noqa: F401 (binds `facetrain.alignment`, never `facetrain.align`)
    import facetrain.training.config  # noqa: F401 (binds `facetrain.training`, never `facetrain.train`)
    from facetrain import api, infer

    assert inspect.isfunction(facetrain.align) and facetrain.align is api.align
    assert inspect.isfunction(facetrain.train) and facetrain.train is api.train
    assert facetrain.load_model is api.load_model is infer.load_model


def test_checkpoint_threshold_reaches_verify(run_dir, photo):
    results = json.loads((run_dir / "results.json").read_text())
    l2 = results["test"]["average"]["best_threshold"]
    model = facetrain.load_model(run_dir / "best.ckpt", device="cpu")
    assert model.threshold_cosine == pytest.approx(1 - l2 / 2) and not model.training
    same = facetrain.verify(model, photo, photo)
    assert same.similarity == pytest.approx(1.0, abs=1e-5) and same.threshold == model.threshold_cosine and same.same
    flipped = Image.fromarray(np.ascontiguousarray(data.astronaut()[:, ::-1]))
    explicit = facetrain.verify(model, photo, flipped, threshold=2.0)  # no cosine reaches 2: never the same
    assert explicit.threshold == 2.0 and explicit.same is False and -1 <= explicit.similarity <= 1


def test_align_and_embed_match_the_seed_api(run_dir, photo):
    model = facetrain.load_model(run_dir / "last.ckpt", device="cpu")
    face = facetrain.align(photo)
    assert np.array_equal(np.asarray(face), np.asarray(get_aligned_face(photo)))
    assert [np.asarray(f).shape for f in facetrain.align_all([photo, Image.open(photo)])] == [(112, 112, 3)] * 2
    features, norms = facetrain.embed(model, [face, np.asarray(face)])
    with torch.no_grad():
        expected, expected_norm = model(to_input(face))
    np.testing.assert_allclose(features[0], expected[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(features[1], features[0], atol=1e-6)
    assert norms[0] == pytest.approx(expected_norm.item(), rel=1e-5)
    fused, _ = facetrain.embed(model, [face], flip=True)
    assert abs(np.linalg.norm(fused[0]) - 1) < 1e-5 and not np.allclose(fused[0], features[0])


def test_evaluate_returns_the_protocol_with_both_threshold_units(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    results = facetrain.evaluate(run_dir / "best.ckpt", f"{config['data_root']}/val", progress=False)
    lfw = results["lfw"]
    assert lfw["best_threshold_cosine"] == pytest.approx(1 - lfw["best_threshold"] / 2)


def test_embed_takes_one_face_as_well_as_a_list(run_dir, photo):
    model = facetrain.load_model(run_dir / "last.ckpt", device="cpu")
    face = facetrain.align(photo)
    face_path = photo.parent / "face.png"
    face.save(face_path)
    listed, norms = facetrain.embed(model, [face_path])
    for one in (face_path, str(face_path), face, np.asarray(face), np.asarray(face)[None]):
        features, one_norm = facetrain.embed(model, one)
        assert features.shape == (1, listed.shape[1]) and np.allclose(features, listed, atol=1e-6)
        assert np.allclose(one_norm, norms, rtol=1e-5)


@pytest.mark.parametrize("call, exception, fragment", [
    (lambda m, p: facetrain.embed(m, None), ConfigError, "got NoneType"),
    (lambda m, p: facetrain.embed(m, (x for x in [p])), ConfigError, "pass a list (list(faces))"),
    (lambda m, p: facetrain.embed(m, 3), ConfigError, "got int"),
    (lambda m, p: facetrain.embed(m, [p, None]), DataError, "face 1 is None"),
    (lambda m, p: facetrain.embed(m, [p, 7]), ConfigError, "face 1 is of type int"),
    (lambda m, p: facetrain.embed(m, []), DataError, "at least one face"),
    (lambda m, p: facetrain.embed(m, p, batch_size=0), ConfigError, "batch_size must be"),
    (lambda m, p: facetrain.embed(None, p), ConfigError, "model must be a backbone"),
    (lambda m, p: facetrain.verify(m, p, p, threshold="0.5"), ConfigError, "got str '0.5'"),
    (lambda m, p: facetrain.verify(m, p, p, threshold=float("nan")), ConfigError, "got float nan"),
    (lambda m, p: facetrain.verify(m, p, p, threshold=True), ConfigError, "got bool"),
    (lambda m, p: facetrain.evaluate(p, p, foo=1), TypeError, "evaluate() got unexpected keyword argument(s) 'foo'; "
                                                              "it takes: sets, arch, batch_size"),
])
def test_api_misuse_is_one_clear_message(run_dir, photo, call, exception, fragment):
    model = facetrain.load_model(run_dir / "last.ckpt", device="cpu")
    with pytest.raises(exception) as refused:
        call(model, photo)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


def test_compare_images_takes_one_path_and_refuses_no_list(run_dir, photo):
    from facetrain.alignment.aligner import FaceAligner
    from facetrain.compare import compare_images

    model, aligner = facetrain.load_model(run_dir / "last.ckpt", device="cpu"), FaceAligner()
    for one in (photo, str(photo)):
        faces, similarity = compare_images(model, one, aligner)
        assert len(faces) == 1 and similarity.shape == (1, 1) and similarity[0, 0] == pytest.approx(1.0, abs=1e-5)
    for bad in ([], None):
        with pytest.raises(DataError, match="compare needs a list of at least one image path"):
            compare_images(model, bad, aligner)
