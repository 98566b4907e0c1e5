"""The .ecf bitstream: header, optional extension, two payloads, CRC-32.

    offset size  field
    0      4     magic b"ECF\\x1a"
    4      1     format version (FORMATS below)
    5      1     flags (0; reserved)
    6      8     model id (first 8 bytes of the weights' SHA-256, see weights.model_id)
    14     4     image height, big-endian uint32, 1 .. MAX_SIDE
    18     4     image width
    22     4     z payload length in bytes (multiple of 4: 32-bit range-coder words)
    26     4     y payload length in bytes
    -- format 5 and later: the extension --
    30     2     quality code: 0 for a fixed-rate model, else quality * QUALITY_SCALE
    32     4     metadata length in bytes (0 .. MAX_METADATA)
    36     ...   metadata records: tag (1 byte), length (uint32), data; each tag at most once
    ...    ...   z payload, y payload
    end-4  4     CRC-32 of every byte before it

Metadata tags: 1 ICC profile, 2 EXIF (orientation already applied to the pixels), 3 the
source's colour mode (one byte: 0 RGB, 1 grayscale). Every field is validated before
anything is allocated from it. CRC-32 detects every error burst of up to 32 bits, every 1-
or 2-bit error, and every error of up to 3 bits in streams up to ~11 KB; other random
damage goes undetected with probability ~2**-32. It is no protection against deliberate
tampering.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BitstreamError


@dataclass(frozen=True)
class Format:
    """One format version: how its payloads are coded and what its header holds."""
    version: int
    y_coding: int           # the y payload's coding format (context_entropy.py / rans.py)
    extension: bool         # quality code and metadata after the fixed header
    y_word_aligned: bool    # y payload length a multiple of 4
    about: str


FORMATS = {f.version: f for f in (
    Format(3, 3, False, True, "fixed-point entropy parameters, integer tables, rANS substreams"),
    Format(4, 4, False, False, "as 3, with a varint substream table (~23 bytes less per Kodak image)"),
    Format(5, 4, True, False, "as 4, plus the rate (variable-rate models) and image metadata"),
)}
WRITTEN = 5                 # what pack() writes
# Pre-release formats nobody holds: a clear error instead of a reader kept alive for them.
DROPPED = {1: "float entropy parameters", 2: "float64 tables with a range coder"}

MAGIC = b"ECF\x1a"
MAX_SIDE = 1 << 16
QUALITY_SCALE = 8192        # quality step 1/8192: a rate target meets its bpp well within 0.1 %
MAX_ICC = 1 << 20           # ICC profiles in the wild are at most a few hundred KB
MAX_EXIF = 65533            # what one JPEG APP1 segment can hold
MAX_METADATA = MAX_ICC + MAX_EXIF + 64
TAG_ICC, TAG_EXIF, TAG_MODE = 1, 2, 3
MODES = {"RGB": 0, "L": 1}
_HEAD = struct.Struct(">4sBB8sIIII")
_EXT = struct.Struct(">HI")
_RECORD = struct.Struct(">BI")
_CRC = struct.Struct(">I")
HEADER_SIZE = _HEAD.size    # the fixed part every version has
MAX_HEADER_SIZE = _HEAD.size + _EXT.size


@dataclass(frozen=True)
class Header:
    model_id: bytes
    height: int
    width: int
    z_length: int = 0
    y_length: int = 0
    version: int = WRITTEN
    quality: float | None = None
    metadata: dict = field(default_factory=dict)
    metadata_length: int = 0

    def __repr__(self) -> str:
        d = self.describe()
        return f"Header({', '.join(f'{k}={v!r}' for k, v in d.items() if k != 'total_bytes')})"

    @property
    def format(self) -> Format:
        return FORMATS[self.version]

    @property
    def size(self) -> int:
        """Bytes before the z payload."""
        return MAX_HEADER_SIZE + self.metadata_length if self.format.extension else HEADER_SIZE

    def describe(self) -> dict:
        meta = {k: (f"{len(v)} bytes" if isinstance(v, bytes) else v) for k, v in self.metadata.items()}
        return {"format_version": self.version, "model_id": self.model_id.hex(), "height": self.height,
                "width": self.width, "quality": self.quality, "metadata": meta,
                "z_bytes": self.z_length, "y_bytes": self.y_length,
                "total_bytes": self.size + self.z_length + self.y_length + _CRC.size}


def quality_code(quality: float | None) -> int:
    """The header's integer for a quality (0: fixed-rate model)."""
    return 0 if quality is None else round(quality * QUALITY_SCALE)


def coded_quality(quality: float | None) -> float | None:
    """The quality a stream carries for `quality`: what encoder and decoder both use."""
    return None if quality is None else quality_code(quality) / QUALITY_SCALE


def pack_metadata(metadata: dict | None) -> bytes:
    """Metadata dict (icc_profile / exif bytes, mode 'RGB' | 'L') -> the header's records."""
    metadata = metadata or {}
    unknown = set(metadata) - {"icc_profile", "exif", "mode"}
    if unknown:
        raise ValueError(f"unknown metadata keys {sorted(unknown)}: use icc_profile, exif, mode")
    out = b""
    for key, tag, limit in (("icc_profile", TAG_ICC, MAX_ICC), ("exif", TAG_EXIF, MAX_EXIF)):
        data = metadata.get(key)
        if not data:
            continue
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"metadata {key} must be bytes, got {type(data).__name__}")
        if len(data) > limit:
            raise ValueError(f"{key} of {len(data)} bytes exceeds the {limit} bytes a stream carries; "
                             f"pass metadata without it")
        out += _RECORD.pack(tag, len(data)) + bytes(data)
    mode = metadata.get("mode")
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"metadata mode must be one of {sorted(MODES)}, got {mode!r}")
        out += _RECORD.pack(TAG_MODE, 1) + bytes([MODES[mode]])
    return out


def _parse_metadata(block: bytes) -> dict:
    meta, pos = {}, 0
    names = {TAG_ICC: "icc_profile", TAG_EXIF: "exif", TAG_MODE: "mode"}
    while pos < len(block):
        if pos + _RECORD.size > len(block):
            raise BitstreamError("corrupted ECF metadata: truncated record")
        tag, n = _RECORD.unpack_from(block, pos)
        pos += _RECORD.size
        if tag not in names:
            raise BitstreamError(f"corrupted ECF metadata: unknown record tag {tag}")
        if names[tag] in meta:
            raise BitstreamError(f"corrupted ECF metadata: record {names[tag]} twice")
        if n > len(block) - pos or (tag == TAG_MODE and n != 1):
            raise BitstreamError(f"corrupted ECF metadata: record {names[tag]} of {n} bytes")
        data = block[pos:pos + n]
        pos += n
        if tag == TAG_MODE:
            mode = {v: k for k, v in MODES.items()}.get(data[0])
            if mode is None:
                raise BitstreamError(f"corrupted ECF metadata: colour mode {data[0]}")
            meta["mode"] = mode
        else:
            meta[names[tag]] = data
    return meta


def pack(model_id: bytes, height: int, width: int, z: bytes, y: bytes, quality: float | None = None,
         metadata: dict | None = None) -> bytes:
    """A format-WRITTEN stream. quality: the variable-rate model's (None for fixed rate)."""
    if len(model_id) != 8:
        raise ValueError("model id must be 8 bytes")
    code = quality_code(quality)
    if not 0 <= code < 1 << 16:
        raise ValueError(f"quality {quality} does not fit the header")
    meta = pack_metadata(metadata)
    head = _HEAD.pack(MAGIC, WRITTEN, 0, model_id, height, width, len(z), len(y)) + _EXT.pack(code, len(meta))
    body = head + meta + z + y
    return body + _CRC.pack(zlib.crc32(body))


def _read_from(read) -> bytes:
    """The header bytes (fixed part, extension and metadata) through read(n) -> bytes."""
    bits = read(HEADER_SIZE)
    _check_fixed(bits)
    if FORMATS[bits[4]].extension:
        bits += read(_EXT.size)
        if len(bits) == MAX_HEADER_SIZE:
            n = _EXT.unpack_from(bits, HEADER_SIZE)[1]
            if n <= MAX_METADATA:
                bits += read(n)
    return bits


def _check_fixed(bits: bytes) -> None:
    if len(bits) < len(MAGIC) or bits[:4] != MAGIC:
        raise BitstreamError("not an ECF bitstream: bad magic" if bits else "empty input: not an ECF bitstream")
    if len(bits) < HEADER_SIZE:
        raise BitstreamError(f"truncated ECF bitstream: {len(bits)} bytes, the header alone has {HEADER_SIZE}")
    version = bits[4]
    if version in DROPPED:
        raise BitstreamError(f"unsupported format version {version} (a pre-release format: "
                             f"{DROPPED[version]}); this build reads versions {', '.join(map(str, FORMATS))}")
    if version not in FORMATS:
        raise BitstreamError(f"ECF format version {version} is not supported (this build reads versions "
                             f"{', '.join(map(str, FORMATS))})")


def read_header(source) -> Header:
    """Parse and validate the header only (no payload, no CRC check): cheap metadata access.

    source: the stream's bytes, a binary file object (reads the header from its current
    position) or a path to an .ecf file (reads only the header)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            bits = _read_from(f.read)
    elif hasattr(source, "read"):
        bits = _read_from(source.read)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        bits = _read_from(io.BytesIO(source).read)
    else:
        raise BitstreamError(f"expected bytes, a binary file or a path, got {type(source).__name__}")
    _check_fixed(bits)
    magic, version, flags, mid, h, w, zl, yl = _HEAD.unpack_from(bits)
    fmt = FORMATS[version]
    if flags != 0:
        raise BitstreamError(f"unknown header flags {flags:#x}")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise BitstreamError(f"invalid image size {w}x{h} in header (each side must be 1..{MAX_SIDE})")
    if zl % 4 or (yl % 4 and fmt.y_word_aligned):
        raise BitstreamError("corrupted header: payload lengths must be multiples of 4")
    if not fmt.extension:
        return Header(mid, h, w, zl, yl, version)
    if len(bits) < MAX_HEADER_SIZE:
        raise BitstreamError(f"truncated ECF bitstream: {len(bits)} bytes, a format {version} header has "
                             f"at least {MAX_HEADER_SIZE}")
    code, n = _EXT.unpack_from(bits, HEADER_SIZE)
    if n > MAX_METADATA:
        raise BitstreamError(f"corrupted header: {n} bytes of metadata, at most {MAX_METADATA} are allowed")
    if len(bits) < MAX_HEADER_SIZE + n:
        raise BitstreamError(f"truncated ECF bitstream: the header declares {n} bytes of metadata")
    meta = _parse_metadata(bits[MAX_HEADER_SIZE:MAX_HEADER_SIZE + n])
    return Header(mid, h, w, zl, yl, version, None if code == 0 else code / QUALITY_SCALE, meta, n)


def read_stream(file) -> bytes:
    """Exactly one stream's bytes from a binary file object, from its position on."""
    head = _read_from(file.read)
    rest = read_header(head).describe()["total_bytes"] - len(head)
    return head + file.read(rest)


def unpack(bits: bytes) -> tuple[Header, bytes, bytes]:
    """Validate everything (header, lengths, CRC) and return (header, z payload, y payload)."""
    header = read_header(bits)
    bits = bytes(bits)
    start = header.size
    expected = start + header.z_length + header.y_length + _CRC.size
    if len(bits) != expected:
        what = "truncated" if len(bits) < expected else "trailing data after"
        raise BitstreamError(f"{what} ECF bitstream: {len(bits)} bytes, header says {expected}")
    (crc,) = _CRC.unpack(bits[-_CRC.size:])
    if zlib.crc32(bits[:-_CRC.size]) != crc:
        raise BitstreamError("corrupted ECF bitstream: CRC-32 mismatch")
    z = bits[start:start + header.z_length]
    y = bits[start + header.z_length:-_CRC.size]
    return header, z, y
