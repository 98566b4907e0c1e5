"""`ecf` and image metadata: EXIF orientation applied, ICC / EXIF carried to the decoded file,
grayscale back as grayscale, `ecf info` lists what a stream carries."""
import json

import numpy as np
from PIL import Image, ImageCms

from ecf_engine.cli import main

from conftest import smooth_image

TINY = ["--model", "tiny"]


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _marked(h=64, w=96):
    """An image whose top-left quarter is white and the rest dark: its orientation is visible
    even through the tiny random model (it keeps the coarse layout)."""
    a = np.full((h, w, 3), 30, np.uint8)
    a[: h // 2, : w // 2] = 230
    return a


def test_exif_orientation_is_applied(tmp_path, default_engine):
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Camera"                  # 6: shown rotated 90 degrees clockwise
    Image.fromarray(_marked()).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    assert main(["encode", str(tmp_path / "photo.jpg"), "-q", "3"]) == 0
    assert main(["decode", str(tmp_path / "photo.ecf")]) == 0
    with Image.open(tmp_path / "photo.decoded.png") as out:
        assert out.size == (64, 96)                            # portrait now, as a viewer shows the JPEG
        a = np.asarray(out.convert("L")).astype(int)
        stored = out.getexif()
    assert a[:48, 32:].mean() > a[:48, :32].mean() + 100     # the white corner moved to the top right
    assert stored[0x0112] == 1 and stored[0x010F] == "Camera"   # nobody rotates it a second time


def test_icc_profile_and_exif_round_trip(tmp_path, capsys):
    icc = _srgb_profile()
    exif = Image.Exif()
    exif[0x0131] = "some editor"
    Image.fromarray(smooth_image(64, 96)).save(tmp_path / "x.png", icc_profile=icc, exif=exif)
    assert main(["encode", str(tmp_path / "x.png"), *TINY]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "x.ecf")]) == 0
    meta = json.loads(capsys.readouterr().out)["metadata"]
    assert meta["icc_profile"] == f"{len(icc)} bytes" and "exif" in meta
    for suffix in (".png", ".tif"):
        out = tmp_path / f"y{suffix}"
        assert main(["decode", str(tmp_path / "x.ecf"), "-o", str(out), *TINY]) == 0
        with Image.open(out) as im:
            assert im.info["icc_profile"] == icc, suffix
            assert im.getexif()[0x0131] == "some editor", suffix


def test_no_metadata_no_records(tmp_path, capsys):
    Image.fromarray(smooth_image(64, 96)).save(tmp_path / "x.png")
    assert main(["encode", str(tmp_path / "x.png"), *TINY]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "x.ecf")]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"] == {}
    assert main(["decode", str(tmp_path / "x.ecf"), *TINY]) == 0
    with Image.open(tmp_path / "x.decoded.png") as im:
        assert "icc_profile" not in im.info and "exif" not in im.info and im.mode == "RGB"


def test_grayscale_comes_back_grayscale_unless_mode(tmp_path, capsys):
    Image.fromarray(smooth_image(64, 96)[:, :, 0]).save(tmp_path / "g.png")
    assert main(["encode", str(tmp_path / "g.png"), *TINY]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "g.ecf")]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"] == {"mode": "L"}
    assert main(["decode", str(tmp_path / "g.ecf"), *TINY]) == 0
    assert main(["decode", str(tmp_path / "g.ecf"), "-o", str(tmp_path / "rgb.png"), "--mode", "RGB", *TINY]) == 0
    with Image.open(tmp_path / "g.decoded.png") as gray, Image.open(tmp_path / "rgb.png") as rgb:
        assert gray.mode == "L" and rgb.mode == "RGB"
        mean = np.round(np.asarray(rgb).astype(np.float32).mean(-1)).astype(np.uint8)
        assert np.array_equal(np.asarray(gray), mean)        # L is the mean of the decoded channels
    Image.fromarray(smooth_image(64, 96)).save(tmp_path / "c.png")
    assert main(["encode", str(tmp_path / "c.png"), *TINY]) == 0
    assert main(["decode", str(tmp_path / "c.ecf"), "--mode", "L", *TINY]) == 0
    with Image.open(tmp_path / "c.decoded.png") as im:
        assert im.mode == "L"
