"""The Pillow plugin: Image.open / im.save / .info on real .ecf files."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import ecf_engine
from ecf_engine.cli import main

from conftest import smooth_image

RGB = smooth_image(64, 96, seed=3)


def test_import_registers_the_format_without_loading_torch():
    probe = ("import sys, ecf_engine; from PIL import Image; "
             "print('torch' in sys.modules, Image.registered_extensions()['.ecf'], Image.MIME['ECF'])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "ECF", "image/x-ecf"]


def test_save_and_open_with_the_shipped_models(tmp_path, default_engine):
    path = tmp_path / "x.ecf"
    Image.fromarray(RGB).save(path)                               # by extension: ECF, the default model
    bits = path.read_bytes()
    assert ecf_engine.read_header(bits).model_id == default_engine.model_id
    assert bits == default_engine.encode(RGB, metadata={})
    with Image.open(path) as im:
        assert (im.format, im.mode, im.size) == ("ECF", "RGB", (96, 64))
        assert im.tile and im.info == {"quality": 4.0}            # header only until the pixels are used
        pixels = np.asarray(im)
    assert np.array_equal(pixels, default_engine.decode(bits))
    Image.fromarray(RGB).save(tmp_path / "q1.ecf", quality=1.5)
    assert ecf_engine.read_header(tmp_path / "q1.ecf").quality == 1.5
    assert (tmp_path / "q1.ecf").stat().st_size < path.stat().st_size
    with pytest.raises(ecf_engine.ECFError, match="quality"):
        Image.fromarray(RGB).save(tmp_path / "bad.ecf", quality=7.5)
    assert not (tmp_path / "bad.ecf").exists()                  # Pillow removes the file it created


def test_info_carries_icc_and_exif(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    icc = b"\0\0\0\x18not-a-real-icc-profile!!"
    im = Image.fromarray(RGB)
    im.save(tmp_path / "x.ecf", model="tiny", icc_profile=icc, exif=exif)
    with Image.open(tmp_path / "x.ecf") as back:
        assert back.info["icc_profile"] == icc and back.getexif()[0x010F] == "Camera"
        back.load()
        back.save(tmp_path / "again.png", exif=back.info["exif"])      # Pillow's PNG keeps the ICC itself
    with Image.open(tmp_path / "again.png") as png:
        assert png.info["icc_profile"] == icc and png.getexif()[0x010F] == "Camera"
    # the image's own metadata is kept by default, as PNG / JPEG writers do
    with Image.open(tmp_path / "again.png") as png:
        png.save(tmp_path / "copy.ecf", model="tiny")
    with Image.open(tmp_path / "copy.ecf") as copy:
        assert copy.info["icc_profile"] == icc


def test_grayscale_and_orientation(tmp_path):
    gray = Image.fromarray(RGB[:, :, 1])
    gray.save(tmp_path / "g.ecf", model="tiny")
    with Image.open(tmp_path / "g.ecf") as im:
        assert im.mode == "L" and np.asarray(im).shape == (64, 96)
    rotated = Image.fromarray(RGB)
    exif = Image.Exif()
    exif[0x0112] = 8                                              # shown rotated 90 degrees counter-clockwise
    rotated.info["exif"] = exif.tobytes()
    rotated.save(tmp_path / "r.ecf", model="tiny")
    with Image.open(tmp_path / "r.ecf") as im:
        assert im.size == (64, 96) and im.getexif().get(0x0112) == 1


def test_cli_streams_open_in_pillow(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "x.png")
    assert main(["encode", str(tmp_path / "x.png"), "-q", "2"]) == 0
    assert main(["decode", str(tmp_path / "x.ecf")]) == 0
    with Image.open(tmp_path / "x.ecf") as im:
        assert np.array_equal(np.asarray(im), np.asarray(Image.open(tmp_path / "x.decoded.png")))


def test_damaged_files_raise_on_open_or_load(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "x.ecf", model="tiny")
    bits = (tmp_path / "x.ecf").read_bytes()
    (tmp_path / "cut.ecf").write_bytes(bits[:-9])
    with Image.open(tmp_path / "cut.ecf") as im, pytest.raises(ecf_engine.BitstreamError, match="truncated"):
        im.load()
    (tmp_path / "head.ecf").write_bytes(bits[:20])
    with pytest.raises(ecf_engine.BitstreamError):
        Image.open(tmp_path / "head.ecf")
