"""Each accelerated op against its PyTorch reference, at Kodak, 1080p and 4K latent sizes.

    python benchmarks/bench_kernels.py [--repeat 20] [--threads 2] [--device cpu|cuda]

Ops (ecf_engine/ops.py chooses among them in the engine; here each runs directly):
  egr, egr_inverse     torch reference vs the C++ extension (CPU) / the CUDA extension
  window_attention     torch reference (SDPA, masks materialised per window chunk) vs the
                       Triton kernel: one W-SCA layer over all 7 input slabs
  cached_attention     the same for one decode: steps 0..6 of one layer against the KV cache
Shapes are the `paper` preset's (M=192, N_cs=4, K=8, d_e=384, 12 heads) at the latent of
each image size (padded to a multiple of 64 as the engine does). Triton rows run only on
CUDA: on a CPU the kernels exist only in Triton's interpreter, whose speed means nothing.
Each row: --warmup untimed calls, then the median and spread of --repeat timed calls,
device synchronized. Writes benchmarks/results/kernels-<device>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ecf_engine import ops
from ecf_engine.config import Config
from ecf_engine.contextformer import LayerCache, SCABlock, cached_attention_reference, window_attention_reference
from ecf_engine.egr import egr_inverse_reference, egr_reference
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"kodak": (768, 512), "1080p": (1920, 1080), "4k": (3840, 2160)}


def latent_hw(width: int, height: int) -> tuple[int, int]:
    return -(-height // 64) * 4, -(-width // 64) * 4        # padded to 64, then /16


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, warmup: int, repeat: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(1000 * (time.perf_counter() - t))
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "iqr_ms": q[2] - q[0], "repeat": repeat, "warmup": warmup}


def egr_rows(cfg, H, W, device, dtype, args):
    y = torch.randn(1, cfg.M, H, W, device=device, dtype=dtype)
    slabs = egr_reference(y, cfg.N_cs)
    ext = ops._extension_module(device.type == "cuda")
    fast_name = "cuda" if device.type == "cuda" else "cpp"
    impls = {"egr": {"torch": lambda: egr_reference(y, cfg.N_cs)},
             "egr_inverse": {"torch": lambda: egr_inverse_reference(slabs, cfg.N_cs)}}
    if ext is None:
        print(f"  skip {fast_name} EGR rows: {ops._extension['cuda' if device.type == 'cuda' else 'cpu']}")
    else:
        if not (torch.equal(ext.egr(y, cfg.N_cs), slabs) and torch.equal(ext.egr_inverse(slabs, cfg.N_cs), y)):
            raise SystemExit("EGR extension disagrees with the reference")
        impls["egr"][fast_name] = lambda: ext.egr(y, cfg.N_cs)
        impls["egr_inverse"][fast_name] = lambda: ext.egr_inverse(slabs, cfg.N_cs)
    for op, by_impl in impls.items():
        for impl, fn in by_impl.items():
            yield op, impl, f"({cfg.M}, {H}, {W})", timeit(fn, device, args.warmup, args.repeat)


def attention_rows(cfg, H, W, device, dtype, args):
    if device.type != "cuda":
        print("  skip Triton attention rows: the kernels run compiled on CUDA only "
              "(on CPU only Triton's interpreter, not meaningful for speed)")
        return
    from ecf_engine.kernels.cached_attention import cached_attention
    from ecf_engine.kernels.window_attention import window_attention
    torch.manual_seed(0)
    S, heads = cfg.groups - 1, cfg.heads
    blk = SCABlock(cfg, False, S).to(device, dtype)
    grid, bias = blk.grid(H, W // 2), blk.bias()
    qkv = torch.randn(1, S, H, W // 2, 3 * cfg.d_e, device=device, dtype=dtype)
    views = qkv.unflatten(-1, (heads, -1)).chunk(3, dim=-1)
    shape = f"({S}, {H}, {W // 2}, {cfg.d_e}) {heads}h"
    with torch.no_grad():
        impls = {"torch (SDPA)": lambda: window_attention_reference(qkv, heads, grid, bias),
                 "triton": lambda: window_attention(*views, blk.bias_spatial, blk.bias_slab, grid)}
        for impl, fn in impls.items():
            yield "window_attention", impl, shape, timeit(fn, device, args.warmup, args.repeat)
        cache = LayerCache(1, grid, cfg, dtype, device)
        steps = [(qkv[:, s:s + 1], [t[:, s:s + 1] for t in views]) for s in range(S)]

        def decode_reference():
            for s, (x, _) in enumerate(steps):
                cached_attention_reference(x, heads, s, grid, bias, cache)

        def decode_triton():
            for s, (_, v) in enumerate(steps):
                cached_attention(*v, cache.k, cache.v, s, blk.bias_spatial, blk.bias_slab, grid)

        for impl, fn in {"torch (SDPA)": decode_reference, "triton": decode_triton}.items():
            yield f"cached_attention x{S} steps", impl, shape, timeit(fn, device, args.warmup, args.repeat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cfg = Config.from_name("paper")
    where = machine() + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    print(f"{where}; {args.dtype}; median of {args.repeat} after {args.warmup} warm-up calls")
    rows = []
    for size in args.sizes:
        H, W = latent_hw(*SIZES[size])
        print(f"{size}: latent {H}x{W}")
        for gen in (egr_rows, attention_rows):
            for op, impl, shape, t in gen(cfg, H, W, device, dtype, args):
                rows.append({"size": size, "latent": [H, W], "op": op, "impl": impl, "shape": shape,
                             "device": device.type, "dtype": args.dtype, **t})
    print(f"\n{'size':<7}{'op':<30}{'impl':<14}{'median ms':>11}{'IQR ms':>9}{'min':>9}{'max':>9}{'vs torch':>10}")
    for r in rows:
        base = next(b for b in rows if b["size"] == r["size"] and b["op"] == r["op"] and b["impl"].startswith("torch"))
        speedup = base["median_ms"] / r["median_ms"]
        print(f"{r['size']:<7}{r['op']:<30}{r['impl']:<14}{r['median_ms']:>11.3f}{r['iqr_ms']:>9.3f}"
              f"{r['min_ms']:>9.3f}{r['max_ms']:>9.3f}{speedup:>9.2f}x")
    out = ROOT / "benchmarks" / "results" / f"kernels-{device.type}.json"
    out.write_text(json.dumps({"machine": where, "device": device.type, "dtype": args.dtype, "config": "paper",
                               "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
