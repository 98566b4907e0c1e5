"""Rate cost of the fixed-point entropy parameters (format 2) against the float ones (format 1).

    python benchmarks/fixed_point.py [--models small-mse0004 ...] [--images N]

For every Kodak image and shipped model: the y payload coded with the fixed-point
networks (what Engine.encode writes) and with the float networks (format 1), the z
payload (identical in both), the share of quantized GMM parameters that differ, and
the time of the 7-step parameter schedule on both paths. The same latents are coded
both ways, so the decoded images are identical; only the rate can differ.
Writes benchmarks/results/fixed-point-kodak.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import ecf_engine
from ecf_engine import schedule
from ecf_engine.egr import egr
from ecf_engine.engine import _to_input
from ecf_engine.entropy import quantize
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def parameters(net, psi, slabs):
    """Raw GMM parameters of every group from the 7-step schedule, and its time in ms."""
    got = []

    def code_group(g, raw):
        got.append(raw)
        return slabs[:, g]
    t = time.perf_counter()
    schedule.run(net, psi, code_group)
    return torch.stack(got, 1), 1000 * (time.perf_counter() - t)


@torch.no_grad()
def measure(engine, rgb: np.ndarray) -> dict:
    m = engine.model
    x = _to_input(rgb)
    y, z = engine._analyze(x)
    z_hat, cem = torch.round(z), m.context_model
    psi_fixed, psi_float = engine.hyper(z_hat), m.h_s(z_hat)
    exact_bytes, _ = cem.compress(y, psi_fixed)
    float_bytes, _ = cem.compress(y, psi_float, exact=False)
    stream = engine.encode(rgb)
    slabs = egr(torch.round(y), m.cfg.N_cs)
    raw_fixed, ms_fixed = parameters(cem.fixed_point(), psi_fixed, slabs.long())
    raw_float, ms_float = parameters(cem, psi_float, slabs)
    k = m.cfg.k_m
    q_fixed, q_float = quantize(raw_fixed.reshape(-1, 3, k)), quantize(raw_float.reshape(-1, 3, k))
    differ = sum((a != b).sum().item() for a, b in zip(q_fixed, q_float))
    pixels = rgb.shape[0] * rgb.shape[1]
    other = len(stream) - len(exact_bytes)                        # header, z payload, CRC
    return {"bpp_fixed": 8 * len(stream) / pixels, "bpp_float": 8 * (other + len(float_bytes)) / pixels,
            "y_bytes_fixed": len(exact_bytes), "y_bytes_float": len(float_bytes),
            "params_differing": differ / (3 * q_fixed[0].numel()),
            "schedule_ms_fixed": ms_fixed, "schedule_ms_float": ms_float}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(ecf_engine.QUALITIES))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fixed-point-kodak.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(KODAK.glob("*.png"))[:args.images]
    if not paths:
        raise SystemExit(f"no Kodak images in {KODAK}")
    rows = []
    for name in args.models:
        engine = ecf_engine.load(name)
        per = [measure(engine, np.asarray(Image.open(p).convert("RGB"))) for p in tqdm(paths, desc=name)]
        row = {"model": name, "images": len(per)}
        for key in per[0]:
            row[key] = float(np.mean([r[key] for r in per]))
        row["rate_cost_percent"] = 100 * (row["bpp_fixed"] / row["bpp_float"] - 1)
        row["worst_image_cost_percent"] = max(100 * (r["bpp_fixed"] / r["bpp_float"] - 1) for r in per)
        rows.append(row)
    print(f"\nKodak ({len(paths)} images), {machine()}, {args.threads} threads")
    print(f"{'model':16} {'bpp float':>10} {'bpp fixed':>10} {'cost %':>8} {'worst %':>8} {'params !=':>10} "
          f"{'sched ms float':>15} {'sched ms fixed':>15}")
    for r in rows:
        print(f"{r['model']:16} {r['bpp_float']:10.4f} {r['bpp_fixed']:10.4f} {r['rate_cost_percent']:8.3f} "
              f"{r['worst_image_cost_percent']:8.3f} {100 * r['params_differing']:9.3f}% "
              f"{r['schedule_ms_float']:15.1f} {r['schedule_ms_fixed']:15.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
