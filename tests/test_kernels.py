"""Triton attention kernels against their PyTorch references (attention.py, fixedpoint.py).

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set below before
the kernels are imported) in fp32; on CUDA they run compiled, also in fp16 / bf16.
Shapes are kept tiny because the interpreter runs each program in Python.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")       # before triton compiles anything
pytest.importorskip("triton")

from ecf_engine import attention, ops                     # noqa: E402
from ecf_engine.attention import cached_attention_reference, window_attention_reference  # noqa: E402
from ecf_engine.config import Config                      # noqa: E402
from ecf_engine.contextformer import LayerCache, SCABlock  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
# max |kernel - reference| allowed, per dtype (outputs are O(1): softmax-weighted values)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
DTYPES = [torch.float32] + ([torch.float16, torch.bfloat16] if CUDA else [])

# (K, N_cs, heads, head dim, latent H, slab width W2, batch): odd sizes need padding (shifted
# or not), several windows per row / column where the interpreter's time allows; head dims
# that are not powers of two exercise the masked tiles
CASES = [(4, 2, 3, 6, 5, 3, 1), (4, 4, 2, 4, 3, 1, 1), (8, 2, 1, 24, 9, 5, 2), (8, 4, 2, 8, 3, 1, 1)]


@pytest.fixture(autouse=True)
def _force_triton(monkeypatch):
    monkeypatch.setenv("ECF_BACKEND", "triton")


def block(K, N_cs, heads, dh, shifted, dtype=torch.float32):
    cfg = Config(M=4 * N_cs, N_cs=N_cs, K=K, L=2, d_e=heads * dh, heads=heads)
    torch.manual_seed(K + 10 * N_cs + heads)
    blk = SCABlock(cfg, shifted, cfg.groups - 1)
    with torch.no_grad():                                 # non-zero tables, so the bias is tested
        blk.bias_spatial.normal_()
        blk.bias_slab.normal_()
    return cfg, blk.to(DEVICE, dtype)


def kernel_ran(op):
    return ops.last_run()[(op, DEVICE)][0] == "triton"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shifted", [False, True], ids=["W-SCA", "SW-SCA"])
@pytest.mark.parametrize("K,N_cs,heads,dh,H,W2,B", CASES)
def test_window_attention_matches_reference(K, N_cs, heads, dh, H, W2, B, shifted, dtype):
    cfg, blk = block(K, N_cs, heads, dh, shifted, dtype)
    grid, bias = blk.grid(H, W2), blk.bias()
    S = cfg.groups - 1
    qkv = torch.randn(B, S, H, W2, 3 * cfg.d_e, device=DEVICE, dtype=dtype)
    with torch.no_grad():
        out = attention.window_attention(qkv, heads, grid, bias, blk.bias_spatial, blk.bias_slab)
        assert kernel_ran("window_attention")
        ref = window_attention_reference(qkv.float(), heads, grid, bias.float())
    assert out.dtype == dtype and out.shape == ref.shape
    assert (out.float() - ref).abs().max().item() <= TOLERANCE[dtype]


@pytest.mark.parametrize("shifted", [False, True], ids=["W-SCA", "SW-SCA"])
@pytest.mark.parametrize("K,N_cs,heads,dh,H,W2,B", CASES)
def test_window_attention_on_fewer_slabs(K, N_cs, heads, dh, H, W2, B, shifted):
    """The uncached schedule runs the transformer over slabs 0..g only."""
    cfg, blk = block(K, N_cs, heads, dh, shifted)
    grid, bias = blk.grid(H, W2), blk.bias()
    qkv = torch.randn(B, 2, H, W2, 3 * cfg.d_e, device=DEVICE)
    with torch.no_grad():
        out = attention.window_attention(qkv, heads, grid, bias, blk.bias_spatial, blk.bias_slab)
    ref = window_attention_reference(qkv, heads, grid, bias)
    assert (out - ref).abs().max().item() <= TOLERANCE[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shifted", [False, True], ids=["W-SCA", "SW-SCA"])
@pytest.mark.parametrize("K,N_cs,heads,dh,H,W2,B", CASES)
def test_cached_attention_every_step(K, N_cs, heads, dh, H, W2, B, shifted, dtype):
    """Each decoding step: same output as SCABlock.step's reference, and the same cache."""
    cfg, blk = block(K, N_cs, heads, dh, shifted, dtype)
    grid, bias = blk.grid(H, W2), blk.bias()
    cache, ref_cache = (LayerCache(B, grid, cfg, dtype, DEVICE) for _ in range(2))
    ref_cache.k, ref_cache.v = ref_cache.k.float(), ref_cache.v.float()
    for step in range(cfg.groups - 1):
        qkv = torch.randn(B, 1, H, W2, 3 * cfg.d_e, device=DEVICE, dtype=dtype)
        with torch.no_grad():
            out = attention.cached_attention(qkv, heads, step, grid, bias, blk.bias_spatial, blk.bias_slab, cache)
            assert kernel_ran("cached_attention")
            ref = cached_attention_reference(qkv.float(), heads, step, grid, bias.float(), ref_cache)
        assert (out.float() - ref).abs().max().item() <= TOLERANCE[dtype], f"step {step}"
        # the append is a copy: bit-identical cache (slabs written so far), padding slots zero as in the reference
        hi = (step + 1) * grid.T
        for c, r in ((cache.k, ref_cache.k), (cache.v, ref_cache.v)):
            assert torch.equal(c[..., :hi, :].float(), r[..., :hi, :])


def test_cached_steps_equal_full_pass():
    """The kernels agree with each other: cached step outputs = slabs of one masked full pass."""
    cfg, blk = block(8, 2, 2, 8, True)
    H, W2 = 7, 5
    grid, bias = blk.grid(H, W2), blk.bias()
    S = cfg.groups - 1
    qkv = torch.randn(1, S, H, W2, 3 * cfg.d_e, device=DEVICE)
    cache = LayerCache(1, grid, cfg, torch.float32, DEVICE)
    with torch.no_grad():
        full = attention.window_attention(qkv, cfg.heads, grid, bias, blk.bias_spatial, blk.bias_slab)
        steps = [attention.cached_attention(qkv[:, s:s + 1], cfg.heads, s, grid, bias, blk.bias_spatial, blk.bias_slab,
                                      cache) for s in range(S)]
    assert (torch.cat(steps, 1) - full).abs().max().item() <= TOLERANCE[torch.float32]


def test_training_uses_the_reference():
    """The kernels are forward-only: with autograd on, ops picks the reference."""
    cfg, blk = block(4, 2, 2, 6, False)
    grid, bias = blk.grid(5, 3), blk.bias()
    qkv = torch.randn(1, 3, 5, 3, 3 * cfg.d_e, device=DEVICE, requires_grad=True)
    attention.window_attention(qkv, cfg.heads, grid, bias, blk.bias_spatial, blk.bias_slab).sum().backward()
    assert ops.last_run()[("window_attention", DEVICE)][0] == "torch"
    assert qkv.grad is not None


def test_auto_keeps_cpu_on_the_reference(monkeypatch):
    monkeypatch.setenv("ECF_BACKEND", "auto")
    cfg, blk = block(4, 2, 2, 6, False)
    qkv = torch.randn(1, 3, 5, 3, 3 * cfg.d_e)
    with torch.no_grad():
        attention.window_attention(qkv, cfg.heads, blk.grid(5, 3), blk.bias().cpu(), blk.bias_spatial.cpu(),
                             blk.bias_slab.cpu())
    assert ops.last_run()[("window_attention", "cpu")][0] == "torch"


def test_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("ECF_BACKEND", "fastest")
    with pytest.raises(ValueError, match="ECF_BACKEND"):
        ops.requested()


@pytest.mark.skipif(CUDA, reason="CUDA machines run the compiled kernels in the tests above")
def test_kernels_compile_for_a_gpu_target(tmp_path):
    """No GPU here, so compile (not run) every kernel for an H100 (sm_90a) with triton's own
    compiler and ptxas (`python -m benchmarks kernels resources`): this catches what the interpreter does
    not check (tile sizes, types, lowering), and register spills, which would make a kernel
    slow where nobody here can time it."""
    import json
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "resources.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "kernels", "resources", "--out", str(out)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode and "no ptxas" in done.stderr:
        pytest.skip("triton's ptxas is not available")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["kernel"] for r in rows} == {"window_attention", "cached_attention", "fixed_attention"}
    for r in rows:
        assert r["spill_store_bytes"] <= 16, r


WITHOUT_TRITON = """
import os, sys, warnings
sys.modules["triton"] = None                      # every 'import triton' fails
os.environ.update(TRITON_INTERPRET="1", ECF_BACKEND="triton")
import torch
import ecf_engine
from ecf_engine import attention, ops
from ecf_engine.config import Config
from ecf_engine.contextformer import SCABlock
blk = SCABlock(Config(M=8, N_cs=2, K=4, L=2, d_e=8, heads=2), False, 3)
with warnings.catch_warnings(record=True) as caught, torch.no_grad():
    warnings.simplefilter("always")
    attention.window_attention(torch.randn(1, 3, 5, 3, 24), 2, blk.grid(5, 3), blk.bias(), blk.bias_spatial, blk.bias_slab)
assert ops.last_run()[("window_attention", "cpu")][0] == "torch"
assert len(caught) == 1 and "triton unavailable" in str(caught[0].message)
print("fell back")
"""


def test_import_and_fallback_without_triton():
    """import ecf_engine needs no triton; forcing the kernels without it warns once and runs the reference."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "fell back" in done.stdout, done.stderr[-3000:]
