"""Mutation fuzzing of the decoder.

    python -m ecf_engine.fuzz --count 100000 --report fuzz-report.json

Every input must end in an ECFError, or (where the CRC cannot see the damage, i.e. the
mutation recomputed it) in a valid HxWx3 uint8 image of the size the header declares.
Anything else (another exception type, a wrong shape, a crash) is a failure.
"""
from __future__ import annotations

import argparse
import json
import struct
import time
import traceback
import zlib

import numpy as np
from tqdm import tqdm

from . import bitstream
from .errors import ECFError

KINDS = ("bitflip", "truncate", "random", "header", "payload_crc_fixed", "splice", "other_model")


def _fix_crc(b: bytearray) -> bytes:
    body = bytes(b[:-4])
    return body + struct.pack(">I", zlib.crc32(body))


def mutate(seed_stream: bytes, other_stream: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutated input of the given kind."""
    b = bytearray(seed_stream)
    if kind == "bitflip":       # 1..8 distinct bits, so the stream always changes
        for bit in rng.choice(8 * len(b), int(rng.integers(1, 9)), replace=False):
            b[bit // 8] ^= 1 << int(bit % 8)
        return bytes(b)
    if kind == "truncate":
        return bytes(b[:int(rng.integers(len(b)))])
    if kind == "random":
        data = rng.integers(0, 256, int(rng.integers(0, 2 * len(b)))).astype(np.uint8).tobytes()
        return bitstream.MAGIC + data if rng.random() < 0.5 else data
    if kind == "header":
        offset = int(rng.choice([4, 5, 14, 18, 22, 26, 30, 32]))      # 30, 32: format 5's quality, metadata length
        value = int(rng.choice([0, 1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 16, (1 << 16) + 1, int(rng.integers(1 << 32))]))
        width = {4: 1, 5: 1, 30: 2}.get(offset, 4)
        b[offset:offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")
        return _fix_crc(b) if rng.random() < 0.5 else bytes(b)
    if kind == "payload_crc_fixed":
        lo = bitstream.MAX_HEADER_SIZE
        for _ in range(int(rng.integers(1, 5))):
            pos = int(rng.integers(lo, len(b) - 4))
            b[pos] = int(rng.integers(256))
        return _fix_crc(b)
    if kind == "splice":
        cut = int(rng.integers(bitstream.MAX_HEADER_SIZE, len(b)))
        return _fix_crc(bytearray(b[:cut] + other_stream[cut:]))
    if kind == "other_model":
        return other_stream
    raise ValueError(f"unknown mutation kind {kind!r}")


def check(engine, data: bytes) -> str:
    """'rejected', 'decoded' or raises AssertionError describing a failure."""
    try:
        out = engine.decode(data)
    except ECFError:
        return "rejected"
    h = bitstream.read_header(data)
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (h.height, h.width, 3)):
        raise AssertionError(f"decoded to {type(out).__name__} {getattr(out, 'shape', None)}, header says {h.width}x{h.height}")
    return "decoded"


def run(engine, seed_stream: bytes, other_stream: bytes, count: int, seed: int = 0, progress: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    counts = {k: {"rejected": 0, "decoded": 0} for k in KINDS}
    failures = []
    start = time.perf_counter()
    for i in tqdm(range(count), desc="fuzz", disable=not progress):
        kind = KINDS[i % len(KINDS)]
        data = mutate(seed_stream, other_stream, kind, rng)
        try:
            counts[kind][check(engine, data)] += 1
        except Exception as e:      # anything but ECFError is a finding
            failures.append({"kind": kind, "input_hex": data.hex()[:512], "error": repr(e),
                             "traceback": traceback.format_exc(limit=3)})
    return {"inputs": count, "seconds": time.perf_counter() - start, "counts": counts, "failures": failures}


def main(argv=None) -> int:
    import ecf_engine
    from .engine import Engine
    from .evaluate import machine
    from .weights import load_weights
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--model", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", default="fuzz-report.json")
    args = p.parse_args(argv)
    engine = ecf_engine.load(args.model)
    r = np.random.default_rng(args.seed)
    seed_stream = engine.encode(r.integers(0, 256, (24, 40, 3)).astype(np.uint8))
    other = Engine(*load_weights("tiny", seed=12345))          # a different model id
    other_stream = other.encode(r.integers(0, 256, (24, 40, 3)).astype(np.uint8))
    report = run(engine, seed_stream, other_stream, args.count, args.seed)
    report.update({"model": args.model, "machine": machine()})
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2)
    print(f"{report['inputs']} inputs in {report['seconds']:.0f} s, {len(report['failures'])} failures; wrote {args.report}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
