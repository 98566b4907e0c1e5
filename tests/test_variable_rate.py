"""Variable-rate models: the quality knob, its header field, lambda and rate targets."""
import numpy as np
import pytest
import torch

import ecf_engine
from ecf_engine import bitstream
from ecf_engine.config import QUALITY_LAMBDAS, lambda_of_quality, quality_of_lambda
from ecf_engine.engine import Engine
from ecf_engine.errors import BitstreamError, RateError
from ecf_engine.metrics import psnr
from ecf_engine.weights import load_weights

from conftest import smooth_image


@pytest.fixture(scope="module")
def vr_engine() -> Engine:
    """tiny-vr with seeded weights, latents scaled up (as conftest.tiny_model) and the gains
    of a model started from lambda 0.014: the rate grows with the quality."""
    model, mid = load_weights("tiny-vr", seed=0)
    with torch.no_grad():
        model.g_a[-1].weight.mul_(40.0)
        model.h_a[-1].weight.mul_(10.0)
    model.init_gains(0.014)
    return Engine(model, mid, name="tiny-vr")


@pytest.fixture(scope="module")
def image():
    return smooth_image(64, 96, seed=3)


def test_lambda_and_quality_map_onto_each_other():
    assert [lambda_of_quality(q) for q in range(1, 8)] == pytest.approx(QUALITY_LAMBDAS)
    for q in (1.0, 1.37, 4.5, 6.99, 7.0):
        assert quality_of_lambda(lambda_of_quality(q)) == pytest.approx(q)
    assert QUALITY_LAMBDAS[2] < lambda_of_quality(3.5) < QUALITY_LAMBDAS[3]


def test_quality_is_coded_and_decodes_bit_exactly(vr_engine, image):
    sizes = []
    for q in (1, 2.5, 4, 7):
        bits = vr_engine.encode(image, quality=q)
        assert ecf_engine.read_header(bits).quality == q
        assert np.array_equal(vr_engine.decode(bits), vr_engine.reconstruct(image, quality=q))
        sizes.append(len(bits))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert ecf_engine.read_header(vr_engine.encode(image)).quality == vr_engine.default_quality


def test_lambda_setting_is_the_same_as_its_quality(vr_engine, image):
    assert vr_engine.encode(image, lmbda=0.007) == vr_engine.encode(image, quality=3)


def test_bpp_target_is_met(vr_engine, image):
    lo = 8 * len(vr_engine.encode(image, quality=2)) / image[..., 0].size
    hi = 8 * len(vr_engine.encode(image, quality=6)) / image[..., 0].size
    target = (lo + hi) / 2
    bits, stats = vr_engine.encode_with_stats(image, target_bpp=target)
    assert abs(stats["bpp"] / target - 1) <= 0.02
    assert np.array_equal(vr_engine.decode(bits), vr_engine.reconstruct(image, quality=stats["quality"]))


def test_psnr_target_is_met(vr_engine, image):
    lo = psnr(image, vr_engine.reconstruct(image, quality=2))
    hi = psnr(image, vr_engine.reconstruct(image, quality=6))
    target = (lo + hi) / 2
    bits = vr_engine.encode(image, target_psnr=target)
    assert abs(psnr(image, vr_engine.decode(bits)) - target) <= 0.05


@pytest.mark.parametrize("options,message", [
    ({"quality": 0.5}, r"in \[1, 7\]"), ({"quality": 7.5}, r"in \[1, 7\]"), ({"quality": float("nan")}, "nan"),
    ({"quality": "high"}, "a number"), ({"lmbda": 0.5}, "lambda must be in"),
    ({"quality": 3, "target_bpp": 0.5}, "one rate setting"), ({"target_bpp": 0}, "positive"),
    ({"target_psnr": float("inf")}, "positive"), ({"target_bpp": 1e-4}, "below the lowest"),
    ({"target_psnr": 99.0}, "above the highest"),
])
def test_bad_rate_settings_raise(vr_engine, image, options, message):
    with pytest.raises(RateError, match=message):
        vr_engine.encode(image, **options)


def test_rate_settings_on_a_fixed_rate_model_raise(tiny_engine, image):
    with pytest.raises(RateError, match="fixed rate"):
        tiny_engine.encode(image, quality=3)


def test_corrupted_quality_is_rejected(vr_engine, tiny_engine, image):
    import struct
    import zlib
    bits = bytearray(vr_engine.encode(image, quality=3))
    for code in (0, 4096, int(7.5 * bitstream.QUALITY_SCALE), 0xFFFF):     # none, 0.5, 7.5, 7.99
        bits[30:32] = struct.pack(">H", code)
        body = bytes(bits[:-4])
        with pytest.raises(BitstreamError, match="quality"):
            vr_engine.decode(body + struct.pack(">I", zlib.crc32(body)))


def test_metadata_travels_and_grayscale_comes_back_gray(vr_engine):
    from PIL import Image
    gray = Image.fromarray(smooth_image(48, 64, seed=5)[..., 0])
    gray.info["icc_profile"] = b"not really an ICC profile"
    bits = vr_engine.encode(gray, quality=5)
    header = ecf_engine.read_header(bits)
    assert header.metadata == {"icc_profile": b"not really an ICC profile", "mode": "L"}
    out = vr_engine.decode_image(bits)
    assert out.mode == "L" and out.size == gray.size and out.info["icc_profile"] == header.metadata["icc_profile"]
    assert vr_engine.decode(bits).shape == (48, 64, 3)
    assert ecf_engine.read_header(vr_engine.encode(gray, metadata={})).metadata == {}
