"""End to end: a stream encoded with the Triton attention kernels decodes on the PyTorch
path to the same image, and the other way round (default model, 64x64 crops of the
bundled sample, so the interpreter finishes in seconds on a CPU).

This holds only if every quantized entropy parameter comes out the same on both paths.
Kernel and reference differ by up to ~1e-5 in the raw float parameters (another summation
order), so a parameter that sits that close to a rounding boundary rounds the other way
and the streams diverge. Measured with benchmarks/kernel_mismatch.py (CPU, interpreter):
0 of 13,824 quantized parameters differ for the crop at (0, 0), 1 for the crop at (64, 0)
(one of the 24 crops of the sample), 3 of 331,776 for the whole 384x256 sample and 7 of
1,327,104 for kodim23 (768x512). So the streams are NOT interchangeable in general: the
(64, 0) case is kept as a strict xfail (there the kernel-encoded stream differs, and
decoding either stream on the other path raises BitstreamError), and it stays one until
the entropy parameters are computed so that both paths round identically (issue 7).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")       # before triton compiles anything
pytest.importorskip("triton")

from ecf_engine import ops                                # noqa: E402
from ecf_engine.errors import BitstreamError              # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "ecf_engine" / "data" / "sample.png"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def crop(row: int, col: int) -> np.ndarray:
    from PIL import Image
    return np.ascontiguousarray(np.asarray(Image.open(SAMPLE).convert("RGB"))[row:row + 64, col:col + 64])


def coded(engine, monkeypatch, backend: str, fn, *args):
    monkeypatch.setenv("ECF_BACKEND", backend)
    out = fn(*args)
    ran = ops.last_run()[("cached_attention", DEVICE)][0]
    assert ran == ("triton" if backend == "triton" else "torch"), ops.backend_report()
    return out


def decoded_or_none(engine, monkeypatch, backend, bits):
    try:
        return coded(engine, monkeypatch, backend, engine.decode, bits)
    except BitstreamError:          # diverged parameters can also leave the range decoder stuck
        return None


@pytest.mark.parametrize("row,col", [
    (0, 0),
    pytest.param(64, 0, marks=pytest.mark.xfail(strict=True, reason=(
        "measured: 1 of 13,824 quantized parameters (a log-scale of group 6) differs between the Triton "
        "kernel and the PyTorch reference for this crop, so the kernel-encoded stream differs"))),
])
def test_kernel_and_reference_streams_are_interchangeable(default_engine, row, col, monkeypatch):
    image = crop(row, col)
    ref_bits = coded(default_engine, monkeypatch, "torch", default_engine.encode, image)
    ref_image = coded(default_engine, monkeypatch, "torch", default_engine.decode, ref_bits)
    kernel_bits = coded(default_engine, monkeypatch, "triton", default_engine.encode, image)
    assert kernel_bits == ref_bits, "kernel-path encode gave a different stream"
    from_kernel = decoded_or_none(default_engine, monkeypatch, "torch", kernel_bits)
    from_ref = decoded_or_none(default_engine, monkeypatch, "triton", ref_bits)
    assert from_kernel is not None and np.array_equal(from_kernel, ref_image), "kernel-encoded stream, torch decode"
    assert from_ref is not None and np.array_equal(from_ref, ref_image), "torch-encoded stream, kernel decode"
