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


def test_load_image_applies_orientation_and_keeps_metadata(tmp_path):
    from ecf_engine.image import load_image
    a = np.zeros((4, 6, 3), np.uint8)
    a[0, 0] = 255                                        # a marked top-left corner
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Camera"             # orientation 6: shown rotated 90 degrees clockwise
    icc = b"\0\0\0\x10fake-icc-profile"
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif, icc_profile=icc)
    rgb, meta = load_image(tmp_path / "o.png")
    assert rgb.shape == (6, 4, 3) and [tuple(p) for p in np.argwhere(rgb[:, :, 0] > 128)] == [(0, 3)]
    assert meta["icc_profile"] == icc and "mode" not in meta
    stored = Image.Exif()
    stored.load(meta["exif"])
    assert meta["exif"].startswith(b"Exif\0\0") and stored[0x0112] == 1 and stored[0x010F] == "Camera"


def test_load_image_grayscale_and_plain_inputs(tmp_path):
    from ecf_engine.image import load_image
    Image.fromarray(RGB[:, :, 0]).save(tmp_path / "g.png")
    rgb, meta = load_image(tmp_path / "g.png")
    assert meta == {"mode": "L"} and np.array_equal(rgb[:, :, 2], RGB[:, :, 0])
    assert load_image(Image.fromarray(RGB))[1] == {}
    rgb, meta = load_image(RGB)
    assert meta == {} and np.array_equal(rgb, RGB)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "bad.png")
