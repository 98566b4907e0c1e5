"""The C++ / CUDA EGR extension (csrc/) against the PyTorch reference (egr.py): identical tensors.

The first test in a fresh environment builds the extension (~40 s on 2 cores, then cached
by torch). Without a compiler or ninja the build fails and these tests are skipped —
the engine then runs the reference, which test_egr.py covers.
"""
from __future__ import annotations

import pytest
import torch

from ecf_engine import ops
from ecf_engine.egr import egr, egr_inverse, egr_reference, egr_inverse_reference

SHAPES = [((1, 8, 4, 6), 4), ((2, 16, 7, 10), 2), ((1, 12, 1, 2), 3), ((3, 4, 5, 4), 1), ((1, 96, 9, 14), 4)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.bool]


def extension(device: str):
    module = ops._extension_module(device == "cuda")
    if module is None:
        pytest.skip(f"EGR extension unavailable: {ops._extension['cuda' if device == 'cuda' else 'cpu']}")
    return module


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def sample(shape, dtype, device):
    y = torch.randn(shape, device=device) * 100
    return (y > 0) if dtype == torch.bool else y.to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,n_cs", SHAPES)
def test_extension_equals_reference(shape, n_cs, dtype, device):
    ext = extension(device)
    y = sample(shape, dtype, device)
    slabs = ext.egr(y, n_cs)
    assert torch.equal(slabs, egr_reference(y, n_cs))
    assert torch.equal(ext.egr_inverse(slabs, n_cs), egr_inverse_reference(slabs, n_cs))
    assert torch.equal(ext.egr_inverse(slabs, n_cs), y)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_empty_inputs(device):
    ext = extension(device)
    y = torch.randn(2, 7, 16, 10, device=device).transpose(1, 2)[:, :, 1:6]        # (2, 16, 5, 10), strided
    assert not y.is_contiguous()
    assert torch.equal(ext.egr(y, 4), egr_reference(y, 4))
    s = egr_reference(y, 4).transpose(2, 3).contiguous().transpose(2, 3)            # strided slabs
    assert torch.equal(ext.egr_inverse(s, 4), egr_inverse_reference(s, 4))
    empty = torch.zeros(0, 8, 3, 4, device=device)
    assert ext.egr(empty, 2).shape == (0, 4, 3, 2, 4)


def test_extension_rejects_bad_shapes_with_value_errors():
    ext = extension("cpu")
    with pytest.raises(ValueError, match="even width"):
        ext.egr(torch.zeros(1, 4, 4, 5), 2)
    with pytest.raises(ValueError, match="slabs"):
        ext.egr_inverse(torch.zeros(1, 3, 4, 2, 2), 2)


def test_dispatch_runs_the_forced_backend(monkeypatch):
    extension("cpu")
    y = torch.randn(1, 8, 4, 6)
    monkeypatch.setenv("ECF_BACKEND", "cpp")
    fast = egr(y, 2)
    assert ops.last_run()[("egr", "cpu")][0] == "cpp"
    assert torch.equal(egr_inverse(fast, 2), y) and ops.last_run()[("egr_inverse", "cpu")][0] == "cpp"
    monkeypatch.setenv("ECF_BACKEND", "torch")
    assert torch.equal(egr(y, 2), fast) and ops.last_run()[("egr", "cpu")][0] == "torch"
    monkeypatch.setenv("ECF_BACKEND", "auto")
    egr(y, 2)
    assert ops.last_run()[("egr", "cpu")][0] == "torch"          # CPU default: the reference
    assert "egr" in ops.backend_report()


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setitem(ops._extension, "cpu", "build failed (test)")
    monkeypatch.setattr(ops, "_warned", set())
    monkeypatch.setenv("ECF_BACKEND", "cpp")
    y = torch.randn(1, 8, 4, 6)
    with pytest.warns(RuntimeWarning, match="build failed"):
        out = egr(y, 2)
    assert torch.equal(out, egr_reference(y, 2)) and ops.last_run()[("egr", "cpu")] == ("torch", "build failed (test)")
