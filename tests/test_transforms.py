import numpy as np
import torch

from facetrain.data.transforms import normalize_batch, to_tensor
from facetrain.geometry.similarity import TEMPLATE_112, align_face, estimate_similarity, warp_and_crop_face


def test_to_tensor_is_bgr_chw_in_minus_one_one():
    img = np.zeros((112, 112, 3), np.uint8)
    img[..., 0] = 255  # blue channel stays first: the model's input is BGR
    t = to_tensor(img)
    assert t.shape == (3, 112, 112) and t.dtype == torch.float32
    assert torch.allclose(t[0], torch.ones(112, 112)) and torch.allclose(t[1], -torch.ones(112, 112))


def test_normalize_batch_matches_to_tensor():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    batch = normalize_batch(torch.from_numpy(imgs))
    for i in range(4):
        assert torch.allclose(batch[i], to_tensor(imgs[i]))


def test_similarity_recovers_a_known_transform():
    angle, scale, shift = np.deg2rad(25.0), 2.3, np.array([140.0, 60.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = TEMPLATE_112 @ rot.T + shift  # template moved into a bigger photo
    m = estimate_similarity(landmarks)
    back = landmarks @ m[:, :2].T + m[:, 2]
    assert np.abs(back - TEMPLATE_112).max() < 1e-4


def test_align_face_puts_a_marked_point_on_the_template():
    canvas = np.zeros((300, 300, 3), np.uint8)
    landmarks = TEMPLATE_112 * 1.7 + 60.0
    x, y = landmarks[2].round().astype(int)
    canvas[y - 2 : y + 3, x - 2 : x + 3] = 255
    out = align_face(canvas, landmarks)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(xs.mean() - TEMPLATE_112[2, 0]) < 1.0 and abs(ys.mean() - TEMPLATE_112[2, 1]) < 1.0


# insightface's published 112x112 ArcFace template, typed in
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])
# AdaFace's get_reference_facial_points(default_square=True): its 96x112 points + 8 px in x, typed in
ADAFACE_SQUARE_112 = np.array([[38.29459953, 51.69630051], [73.53179932, 51.50139999], [56.02519989, 71.73660278],
                               [41.54930115, 92.3655014], [70.72990036, 92.20410156]])


def test_both_warps_scale_the_template_with_the_output_size():
    """Landmarks already on the template doubled: a 224 crop of a 224 photo is the photo itself,
    and a 112 crop of a bigger photo is 112 x 112."""
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    for warp, template in ((align_face, ARCFACE_112), (warp_and_crop_face, ADAFACE_SQUARE_112)):
        out = warp(image, template * 2.0, size=224)
        assert out.shape == (224, 224, 3)
        assert np.abs(out.astype(int) - image).max() <= 1
        assert warp(image, template * 2.0).shape == (112, 112, 3)


def test_align_face_fills_outside_the_photo_with_zero():
    """Landmarks 60 px right of and below the template: crop pixel (x, y) reads photo (x + 60, y + 60),
    so columns and rows from 52 on lie outside the 112x112 photo."""
    out = align_face(np.full((112, 112, 3), 255, np.uint8), ARCFACE_112 + 60.0)
    assert (out[:, 53:] == 0).all() and (out[53:] == 0).all() and (out[:50, :50] == 255).all()
