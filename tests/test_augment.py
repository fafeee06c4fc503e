import cv2
import numpy as np
import pytest

from facetrain.data.augment import (
    Augmenter,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    crop_paste,
    grey,
    low_resolution,
    photometric,
    random_resized_crop_box,
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, (112, 112, 3), dtype=np.uint8)  # no zero pixel: black means "cropped away"
    return cv2.GaussianBlur(img, (5, 5), 0)


def test_deterministic_given_the_rng_seed(face):
    aug = Augmenter(crop_p=0.5, low_res_p=0.5, photometric_p=0.5)
    first = [aug(face, np.random.default_rng([7, i])) for i in range(20)]
    second = [aug(face, np.random.default_rng([7, i])) for i in range(20)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert len({a.tobytes() for a in first}) > 10


def test_probability_zero_is_identity_except_flip(face):
    aug = Augmenter(0.0, 0.0, 0.0, flip_p=0.0)
    assert np.array_equal(aug(face, np.random.default_rng(0)), face)
    always_flip = Augmenter(0.0, 0.0, 0.0, flip_p=1.0)
    assert np.array_equal(always_flip(face, np.random.default_rng(0)), face[:, ::-1])


def test_output_is_contiguous_uint8_of_the_input_shape(face):
    aug = Augmenter(1.0, 1.0, 1.0, flip_p=1.0)
    for i in range(10):
        out = aug(face, np.random.default_rng(i))
        assert out.shape == face.shape and out.dtype == np.uint8 and out.flags.c_contiguous


def test_flip_statistics(face):
    aug = Augmenter(0.0, 0.0, 0.0, flip_p=0.5)
    rng = np.random.default_rng(3)
    mirrored = face[:, ::-1]
    flips = sum(np.array_equal(aug(face, rng), mirrored) for _ in range(800))
    assert 340 < flips < 460


def test_crop_box_follows_torchvision_constraints():
    rng = np.random.default_rng(1)
    areas = []
    for _ in range(1000):
        top, left, h, w = random_resized_crop_box(rng, 112, 112)
        assert 0 <= top and 0 <= left and top + h <= 112 and left + w <= 112 and h > 0 and w > 0
        areas.append(h * w / 112**2)
        assert 0.7 < w / h < 1.45
    assert 0.17 < min(areas) < 0.3 and max(areas) > 0.9


def test_crop_box_falls_back_to_a_central_crop():
    # a very wide image cannot fit a box with ratio <= 4/3 covering >= 90% of it: central crop clamped to 4/3
    top, left, h, w = random_resized_crop_box(np.random.default_rng(0), 10, 200, scale=(0.9, 1.0))
    assert (h, w) == (10, 13) and top == 0 and left == (200 - 13) // 2


def test_crop_pastes_the_region_in_place_on_black(face):
    for seed in range(20):
        out = crop_paste(face, np.random.default_rng(seed))
        top, left, h, w = random_resized_crop_box(np.random.default_rng(seed), 112, 112)
        assert np.array_equal(out[top:top + h, left:left + w], face[top:top + h, left:left + w])
        outside = np.ones(face.shape[:2], bool)
        outside[top:top + h, left:left + w] = False
        assert not out[outside].any()


def test_low_resolution_keeps_shape_and_loses_detail(face):
    rng = np.random.default_rng(2)
    outs = [low_resolution(face, rng) for _ in range(20)]
    assert all(o.shape == face.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, face) for o in outs)
    high_freq = lambda img: np.abs(np.diff(img.astype(int), axis=1)).mean()  # noqa: E731
    assert np.mean([high_freq(o) for o in outs]) < high_freq(face)


def test_unit_factors_leave_the_image_unchanged(face):
    assert np.array_equal(adjust_brightness(face, 1.0), face)
    assert np.array_equal(adjust_contrast(face, 1.0), face)
    assert np.array_equal(adjust_saturation(face, 1.0), face)
    # jitter 0: every factor is exactly 1, in any order
    assert np.array_equal(photometric(face, np.random.default_rng(0), jitter=0.0), face)


def test_brightness_and_contrast():
    img = np.full((4, 4, 3), 100, np.uint8)
    img[0, 0] = 200
    assert adjust_brightness(img, 0.5)[1, 1, 0] == 50 and adjust_brightness(img, 3.0)[0, 0, 0] == 255
    mean = grey(img).mean()
    low = adjust_contrast(img, 0.0)
    assert np.all(np.abs(low.astype(float) - mean) <= 0.5)


def test_saturation_uses_bgr_luminance_weights():
    grey_img = np.full((8, 8, 3), 90, np.uint8)
    assert np.array_equal(adjust_saturation(grey_img, 0.0), grey_img)
    assert np.array_equal(adjust_saturation(grey_img, 1.7), grey_img)
    pure_red = np.zeros((8, 8, 3), np.uint8)
    pure_red[..., 2] = 200  # BGR: red is the last channel
    desaturated = adjust_saturation(pure_red, 0.0)
    assert np.all(np.abs(desaturated.astype(float) - 0.299 * 200) <= 1)  # not 0.114 * 200 (RGB weights)
    pure_blue = np.zeros((8, 8, 3), np.uint8)
    pure_blue[..., 0] = 200
    assert np.all(np.abs(adjust_saturation(pure_blue, 0.0).astype(float) - 0.114 * 200) <= 1)


def test_swap_color_channel_reverses_channels_first(face):
    aug = Augmenter(0.0, 0.0, 0.0, flip_p=0.0, swap_color_channel=True)
    assert np.array_equal(aug(face, np.random.default_rng(0)), face[:, :, ::-1])


def test_invalid_probability_is_rejected():
    with pytest.raises(ValueError, match="crop_p"):
        Augmenter(1.5, 0.0, 0.0)
