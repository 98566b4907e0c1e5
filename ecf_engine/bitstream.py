"""The .ecf bitstream: header, two payloads, CRC-32.

    offset size  field
    0      4     magic b"ECF\\x1a"
    4      1     format version (4; 1, 2 and 3 are still read)
    5      1     flags (0; reserved)
    6      8     model id (first 8 bytes of the weights' SHA-256, see weights.model_id)
    14     4     image height, big-endian uint32, 1 .. MAX_SIDE
    18     4     image width
    22     4     z payload length in bytes (multiple of 4: 32-bit range-coder words)
    26     4     y payload length in bytes (multiple of 4 up to format 3)
    30     ...   z payload, y payload
    end-4  4     CRC-32 of every byte before it

Versions (all read, 4 written): 4 codes y with integer-only frequency tables and rANS over
parallel substreams (rans.py; the y payload starts with the substream table); 3 (before
2026-12-02) did the same with ~23 bytes more per Kodak image around the substreams; 2 used
float64 tables and constriction's range coder; 2, 3 and 4 derive the entropy parameters with
the fixed-point networks (fixedpoint.py), so they decode on any device. 1 (before
2026-11-25) used the float networks and decodes only where they give the encoder's bits.

Every field is validated before anything is allocated from it. CRC-32 detects every
error burst of up to 32 bits, every 1- or 2-bit error, and every error of up to 3 bits
in streams up to ~11 KB; other random damage goes undetected with probability ~2**-32.
It is no protection against deliberate tampering.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import BitstreamError

MAGIC = b"ECF\x1a"
VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
MAX_SIDE = 1 << 16
_HEAD = struct.Struct(">4sBB8sIIII")
HEADER_SIZE = _HEAD.size
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    model_id: bytes
    height: int
    width: int
    z_length: int = 0
    y_length: int = 0
    version: int = VERSION

    def describe(self) -> dict:
        return {"format_version": self.version, "model_id": self.model_id.hex(), "height": self.height,
                "width": self.width, "z_bytes": self.z_length, "y_bytes": self.y_length,
                "total_bytes": HEADER_SIZE + self.z_length + self.y_length + _CRC.size}


def pack(model_id: bytes, height: int, width: int, z: bytes, y: bytes) -> bytes:
    if len(model_id) != 8:
        raise ValueError("model id must be 8 bytes")
    head = _HEAD.pack(MAGIC, VERSION, 0, model_id, height, width, len(z), len(y))
    body = head + z + y
    return body + _CRC.pack(zlib.crc32(body))


def read_header(source) -> Header:
    """Parse and validate the header only (no payload, no CRC check): cheap metadata access.

    source: the stream's bytes, a binary file object (reads HEADER_SIZE bytes from its
    current position) or a path to an .ecf file (reads only the header)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            bits = f.read(HEADER_SIZE)
    elif hasattr(source, "read"):
        bits = source.read(HEADER_SIZE)
    else:
        bits = source
    if not isinstance(bits, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, a binary file or a path, got {type(source).__name__}")
    bits = bytes(bits[:HEADER_SIZE])
    if len(bits) < len(MAGIC) or bits[:4] != MAGIC:
        raise BitstreamError("not an ECF bitstream: bad magic" if bits else "empty input: not an ECF bitstream")
    if len(bits) < HEADER_SIZE:
        raise BitstreamError(f"truncated ECF bitstream: {len(bits)} bytes, the header alone has {HEADER_SIZE}")
    magic, version, flags, mid, h, w, zl, yl = _HEAD.unpack(bits)
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"ECF format version {version} is not supported (this build reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
    if flags != 0:
        raise BitstreamError(f"unknown header flags {flags:#x}")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise BitstreamError(f"invalid image size {w}x{h} in header (each side must be 1..{MAX_SIDE})")
    if zl % 4 or (yl % 4 and version < 4):
        raise BitstreamError("corrupted header: payload lengths must be multiples of 4")
    return Header(mid, h, w, zl, yl, version)


def unpack(bits: bytes) -> tuple[Header, bytes, bytes]:
    """Validate everything (header, lengths, CRC) and return (header, z payload, y payload)."""
    header = read_header(bits)
    bits = bytes(bits)
    expected = HEADER_SIZE + header.z_length + header.y_length + _CRC.size
    if len(bits) != expected:
        what = "truncated" if len(bits) < expected else "trailing data after"
        raise BitstreamError(f"{what} ECF bitstream: {len(bits)} bytes, header says {expected}")
    (crc,) = _CRC.unpack(bits[-_CRC.size:])
    if zlib.crc32(bits[:-_CRC.size]) != crc:
        raise BitstreamError("corrupted ECF bitstream: CRC-32 mismatch")
    z = bits[HEADER_SIZE:HEADER_SIZE + header.z_length]
    y = bits[HEADER_SIZE + header.z_length:-_CRC.size]
    return header, z, y
