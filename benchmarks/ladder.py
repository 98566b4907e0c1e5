"""The paper's optimization ladder for the context model, side by side on one machine.

    python benchmarks/ladder.py [--models paper default] [--repeat 5] [--threads 2] [--device cpu|cuda]

Each rung derives the GMM parameters of all 2*N_cs groups of a Kodak-sized latent
(768x512 -> 48x32) and is measured in kMAC/px (FlopCounterMode, attention included) and
ms (median of --repeat runs after one warm-up; entropy coding excluded, as in the paper):

  (a) no optimizations: 2*N_cs steps, each a full masked pass over the tokens of all
      groups (a zero start slab + groups 0..G-2), as a coder without EGR must do: the
      groups are interleaved in the latent, so every step touches every token
  (b) + EGR: groups are contiguous slabs, so step t runs only over slabs 0..t
  (c) + skip-first-group: group 0 from the hyperprior alone, 2*N_cs-1 steps
      (the engine's `cached=False` schedule)
  (d) + KV cache: each step embeds and attends only the new slab (the engine's default)
  (e) + Triton kernels: rung (d) with the fused window / cached attention kernels
      (ECF_BACKEND=auto on CUDA); (a)-(d) run the PyTorch references (ECF_BACKEND=torch).
      CUDA only: on the CPU the kernels exist only in Triton's interpreter.
  (f) fixed point: rung (d) on the fixed-point copy of the networks that format-3 coding
      runs (fixedpoint.py; C loops on the CPU, the exact Triton step kernel on CUDA):
      the cost of exact, device-independent entropy parameters

(a) and (b) use a variant of the context model with one more input slab (the start
slab) and random weights: the ladder measures cost, not compression.
Writes benchmarks/results/ladder-<device>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import ecf_engine
from ecf_engine import schedule
from ecf_engine.contextformer import ContextModel
from ecf_engine.egr import egr
from ecf_engine.engine import to_input
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 768, 512


def kodak_latent(engine, device):
    from PIL import Image
    src = ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"
    src = src if src.exists() else ROOT / "ecf_engine" / "data" / "sample.png"
    rgb = np.asarray(Image.open(src).convert("RGB").resize((WIDTH, HEIGHT)))
    m = engine.model
    with torch.no_grad():
        y = torch.round(m.g_a(to_input(rgb.copy()).to(device)))
        z = torch.round(m.h_a(y))
        psi, psi_fixed = m.h_s(z), engine.hyper(z)
    return y, psi, psi_fixed


def rungs(engine, y, psi, psi_fixed):
    cfg = engine.cfg
    G = cfg.groups
    main = engine.model.context_model
    torch.manual_seed(0)
    start_token = ContextModel(cfg, n_slabs=G).eval().to(y.device)   # one extra input slab: the start slab
    slabs = egr(y, cfg.N_cs)
    with_start = torch.cat([torch.zeros_like(slabs[:, :1]), slabs[:, :-1]], 1)    # (B, G, H, W2, p)
    psi_slabs = start_token.hyper_slabs(psi)
    H, W2 = slabs.shape[2:4]
    grids, biases = start_token.grids(H, W2), start_token.biases()

    def no_egr():
        for t in range(G):
            ctx = start_token.context(with_start, grids, biases)[:, t]
            start_token.params(ctx, psi_slabs[:, t % 2])

    def egr_only():
        for t in range(G):
            ctx = start_token.context(with_start[:, :t + 1], grids, biases)[:, t]
            start_token.params(ctx, psi_slabs[:, t % 2])

    def run(cached):
        return lambda: schedule.run(main, psi, lambda g, raw: slabs[:, g], cached=cached)

    torch_only = {
        "(a) 2*N_cs steps, full recomputation, no EGR": no_egr,
        "(b) + EGR": egr_only,
        "(c) + skip-first-group (2*N_cs-1 steps)": run(False),
        "(d) + KV cache": run(True),
    }
    out = {label: (fn, "torch") for label, fn in torch_only.items()}
    if y.is_cuda:
        out["(e) + Triton kernels"] = (run(True), "auto")
    fixed, int_slabs = main.fixed_point(), slabs.long()
    out["(f) fixed point (format-3 coding)"] = (
        lambda: schedule.run(fixed, psi_fixed, lambda g, raw: int_slabs[:, g]), "auto")
    return out


@contextlib.contextmanager
def backend(name: str):
    old = os.environ.get("ECF_BACKEND")
    os.environ["ECF_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ECF_BACKEND")
        else:
            os.environ["ECF_BACKEND"] = old


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, repeat: int, device) -> dict:
    """kMAC/px (counted once; a Triton kernel is opaque to FlopCounterMode, so rung (e)
    reports (d)'s count) and synchronized wall times, warm-up separate."""
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            fn()
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        warmup = 1000 * (time.perf_counter() - t)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            _sync(device)
            times.append(1000 * (time.perf_counter() - t))
    return {"kmac_per_px": fc.get_total_flops() / 2 / (WIDTH * HEIGHT) / 1000, "warmup_ms": warmup,
            "ms": {"median": statistics.median(times), "min": min(times), "max": max(times), "n": repeat}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["paper", "default"])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    for name in args.models:
        engine = ecf_engine.load(name, device=device)
        y, psi, psi_fixed = kodak_latent(engine, device)
        rows = {}
        for label, (fn, choice) in rungs(engine, y, psi, psi_fixed).items():
            with backend(choice):
                rows[label] = measure(fn, args.repeat, device)
        if "(e) + Triton kernels" in rows:
            rows["(e) + Triton kernels"]["kmac_per_px"] = rows["(d) + KV cache"]["kmac_per_px"]
        base = next(iter(rows.values()))
        print(f"\n{name}: context model + g_e for all groups of a {WIDTH}x{HEIGHT} image "
              f"(medians of {args.repeat}, {machine()})")
        print(f"{'rung':<46}{'kMAC/px':>10}{'vs (a)':>9}{'ms':>9}{'speed-up':>10}")
        for label, r in rows.items():
            r["complexity_vs_a"] = r["kmac_per_px"] / base["kmac_per_px"]
            r["speedup_vs_a"] = base["ms"]["median"] / r["ms"]["median"]
            print(f"{label:<46}{r['kmac_per_px']:>10.1f}{100 * r['complexity_vs_a']:>8.0f}%"
                  f"{r['ms']['median']:>9.0f}{r['speedup_vs_a']:>9.2f}x")
        if device.type != "cuda":
            print(f"{'(e) + Triton kernels':<46}{'n/a: CUDA only (run with --device cuda)':>38}")
        results.append({"model": name, "rows": rows})
    out = ROOT / "benchmarks" / "results" / f"ladder-{device.type}.json"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out.write_text(json.dumps({"machine": machine(), "device": str(device), "gpu": gpu, "image": f"{WIDTH}x{HEIGHT}",
                               "repeat": args.repeat, "models": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
