import numpy as np
import pytest
import torch
from PIL import Image

from ecf_engine.errors import ImageError
from ecf_engine.image import to_rgb_array

from conftest import smooth_image

RGB = smooth_image(9, 7)


def test_rgb_forms_agree():
    ref = to_rgb_array(RGB)
    assert np.array_equal(to_rgb_array(Image.fromarray(RGB)), ref)
    assert np.array_equal(to_rgb_array(torch.from_numpy(RGB).permute(2, 0, 1)), ref)
    assert np.array_equal(to_rgb_array(torch.from_numpy(RGB).permute(2, 0, 1)[None].float() / 255), ref)
    assert np.array_equal(to_rgb_array(RGB.astype(np.float32) / 255), ref)


def test_grayscale_is_replicated():
    g = RGB[:, :, 0]
    for img in (g, g[:, :, None], Image.fromarray(g)):
        out = to_rgb_array(img)
        assert out.shape == (9, 7, 3) and all(np.array_equal(out[:, :, c], g) for c in range(3))


def test_sixteen_bit_is_reduced():
    a16 = RGB.astype(np.uint16) * 257
    assert np.array_equal(to_rgb_array(a16), RGB)
    gray16 = Image.fromarray(a16[:, :, 0].astype(np.uint16))
    assert np.array_equal(to_rgb_array(gray16)[:, :, 0], RGB[:, :, 0])


def test_alpha_only_when_opaque():
    rgba = np.concatenate([RGB, np.full((9, 7, 1), 255, np.uint8)], 2)
    assert np.array_equal(to_rgb_array(rgba), RGB)
    assert np.array_equal(to_rgb_array(Image.fromarray(rgba, "RGBA")), RGB)
    rgba[0, 0, 3] = 10
    with pytest.raises(ImageError, match="transparency"):
        to_rgb_array(rgba)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 3), np.int64),
    np.full((4, 4, 3), 2.0), np.full((4, 4, 3), np.nan), np.zeros(5, np.uint8), 42, None,
    torch.zeros(2, 3, 4, 4),
])
def test_bad_inputs(bad):
    with pytest.raises(ImageError):
        to_rgb_array(bad)


def test_paths(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    assert np.array_equal(to_rgb_array(tmp_path / "a.png"), RGB)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="not an image"):
        to_rgb_array(str(tmp_path / "empty.png"))
    with pytest.raises(FileNotFoundError):
        to_rgb_array(tmp_path / "missing.png")
