"""Malformed input must end in a clear ecf_engine exception."""
import numpy as np
import pytest

import ecf_engine
from ecf_engine import bitstream
from ecf_engine.errors import BitstreamError, ECFError, UnknownModelError

from conftest import smooth_image, tiny_model
from ecf_engine.engine import Engine


@pytest.fixture(scope="module")
def stream(tiny_engine):
    return tiny_engine.encode(smooth_image(40, 56, seed=9))


def test_header_roundtrip(tiny_engine, stream):
    h = ecf_engine.read_header(stream)
    assert (h.height, h.width, h.model_id) == (40, 56, tiny_engine.model_id)
    assert h.describe()["total_bytes"] == len(stream)


def test_every_truncation_is_rejected(tiny_engine, stream):
    for n in range(len(stream)):
        with pytest.raises(BitstreamError):
            tiny_engine.decode(stream[:n])


def test_trailing_garbage_is_rejected(tiny_engine, stream):
    with pytest.raises(BitstreamError, match="trailing"):
        tiny_engine.decode(stream + b"\0")


def test_flipped_bits_are_detected(tiny_engine, stream):
    rng = np.random.default_rng(0)
    positions = list(range(len(stream))) if len(stream) < 400 else rng.choice(len(stream), 400, replace=False)
    for pos in positions:
        damaged = bytearray(stream)
        damaged[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(ECFError):
            tiny_engine.decode(bytes(damaged))


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "bad magic"),
    (b"ECF", "bad magic"),
])
def test_foreign_input(tiny_engine, data, message):
    with pytest.raises(BitstreamError, match=message):
        tiny_engine.decode(data)


def test_wrong_version_and_extreme_header_values(tiny_engine, stream):
    def patched(offset, value: bytes):
        b = bytearray(stream)
        b[offset:offset + len(value)] = value
        return bytes(b)
    with pytest.raises(BitstreamError, match="version"):
        tiny_engine.decode(patched(4, b"\x07"))
    with pytest.raises(BitstreamError, match="size"):
        tiny_engine.decode(patched(14, (0).to_bytes(4, "big")))
    with pytest.raises(BitstreamError, match="size"):
        tiny_engine.decode(patched(18, (0xFFFFFFFF).to_bytes(4, "big")))
    with pytest.raises(BitstreamError):
        tiny_engine.decode(patched(22, (0xFFFFFFF0).to_bytes(4, "big")))


def test_pixel_limit_is_checked_before_decoding(stream):
    model, mid = tiny_model()
    small_limit = Engine(model, mid, max_pixels=100)
    with pytest.raises(BitstreamError, match="limit"):
        small_limit.decode(stream)


def test_stream_of_another_model_is_rejected(stream):
    other_model, other_id = tiny_model(seed=7)
    with pytest.raises(UnknownModelError, match="model"):
        Engine(other_model, other_id).decode(stream)
    with pytest.raises(UnknownModelError, match="not among the shipped"):
        ecf_engine.decode(stream)


def test_packed_layout():
    b = bitstream.pack(b"12345678", 3, 5, b"zzzz", b"yyyyyyyy")
    h, z, y = bitstream.unpack(b)
    assert (h.height, h.width, z, y) == (3, 5, b"zzzz", b"yyyyyyyy")
    assert len(b) == bitstream.MAX_HEADER_SIZE + 12 + 4 and h.quality is None and h.metadata == {}


def test_quality_and_metadata_round_trip_through_the_header():
    meta = {"icc_profile": b"icc" * 100, "exif": b"Exif\0\0" + bytes(50), "mode": "L"}
    b = bitstream.pack(b"12345678", 3, 5, b"zzzz", b"yyyy", quality=2.25, metadata=meta)
    h, z, y = bitstream.unpack(b)
    assert (h.quality, h.metadata, z, y) == (2.25, meta, b"zzzz", b"yyyy")
    assert h.describe()["metadata"] == {"icc_profile": "300 bytes", "exif": "56 bytes", "mode": "L"}
    assert bitstream.coded_quality(2.3) == round(2.3 * bitstream.QUALITY_SCALE) / bitstream.QUALITY_SCALE
    with pytest.raises(ValueError, match="exceeds"):
        bitstream.pack(b"12345678", 3, 5, b"zzzz", b"yyyy", metadata={"exif": bytes(bitstream.MAX_EXIF + 1)})
    with pytest.raises(ValueError, match="unknown metadata"):
        bitstream.pack(b"12345678", 3, 5, b"zzzz", b"yyyy", metadata={"xmp": b"x"})


@pytest.mark.parametrize("record,message", [
    (b"\x09\x00\x00\x00\x01x", "unknown record tag"),
    (b"\x03\x00\x00\x00\x01\x07", "colour mode"),
    (b"\x03\x00\x00\x00\x02\x01\x01", "mode of 2 bytes"),
    (b"\x01\x00\x00\x00\x09abc", "icc_profile of 9 bytes"),
    (b"\x03\x00\x00\x00\x01\x01\x03\x00\x00\x00\x01\x01", "twice"),
    (b"\x01\x00", "truncated record"),
])
def test_corrupted_metadata_is_rejected_even_with_a_valid_crc(record, message):
    import struct
    import zlib
    head = bitstream.pack(b"12345678", 3, 5, b"zzzz", b"yyyy")[:bitstream.HEADER_SIZE]
    body = head + struct.pack(">HI", 0, len(record)) + record + b"zzzzyyyy"
    with pytest.raises(BitstreamError, match=message):
        bitstream.unpack(body + struct.pack(">I", zlib.crc32(body)))


def test_dropped_pre_release_formats_say_so(stream):
    for version in (1, 2):
        with pytest.raises(BitstreamError, match=f"unsupported format version {version}"):
            ecf_engine.read_header(stream[:4] + bytes([version]) + stream[5:])


def test_header_from_file_and_path_reads_only_the_header(tmp_path, stream):
    import io
    path = tmp_path / "a.ecf"
    path.write_bytes(stream)
    f = io.BytesIO(stream)
    assert ecf_engine.read_header(f) == ecf_engine.read_header(stream) == ecf_engine.read_header(path)
    assert f.tell() == ecf_engine.read_header(stream).size == bitstream.MAX_HEADER_SIZE
    with pytest.raises(BitstreamError, match="expected bytes"):
        ecf_engine.read_header(12345)


def test_stream_of_a_model_that_is_not_shipped_names_the_model():
    mid = bytes(range(8))
    stream = bitstream.pack(mid, 64, 64, b"zzzz", b"yyyyyyyy")
    with pytest.raises(UnknownModelError, match=f"model {mid.hex()}, which is not among the shipped"):
        ecf_engine.decode(stream)
