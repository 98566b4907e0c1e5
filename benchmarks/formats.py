"""Rate and decode time of the four y coding formats on Kodak, with the same latents.

    python benchmarks/formats.py [--models small-mse0004 ...] [--images N] [--threads 2]

    format 1  float entropy parameters, float64 tables, constriction range coder
    format 2  fixed-point parameters (fixedpoint.py), float64 tables, constriction
    format 3  fixed-point parameters, integer tables, rANS over parallel substreams (rans.py)
    format 4  format 3 with ~23 bytes less per Kodak image around the substreams

For every Kodak image and shipped model, the same round(y) is coded in each format:
file bpp (header, z and CRC included, identical in all four), the decode time of y
(7-step schedule + entropy decoding) split into network and coding, and the share of
quantized GMM parameters where the fixed-point networks differ from the float ones.
Only the rate and the time can differ: every format decodes the same latents.
Writes benchmarks/results/formats-kodak.json and prints the table as markdown (README's rows).
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
from ecf_engine.engine import to_input
from ecf_engine.entropy import quantize
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
VERSIONS = (1, 2, 3, 4)


def parameters(net, psi, slabs):
    """Raw GMM parameters of every group from the 7-step schedule."""
    got = []
    schedule.run(net, psi, lambda g, raw: got.append(raw) or slabs[:, g])
    return torch.stack(got, 1)


@torch.no_grad()
def measure(engine, rgb: np.ndarray) -> dict:
    m, cem = engine.model, engine.model.context_model
    y, z = engine.analyze(to_input(rgb))
    z_hat = torch.round(z)
    psi_fixed = engine.hyper(z_hat)
    psi = {1: m.h_s(z_hat), 2: psi_fixed, 3: psi_fixed, 4: psi_fixed}
    stream, info = engine.encode_with_stats(rgb)                 # format 4
    other = len(stream) - info["y_bytes"]                        # header, z payload, CRC
    pixels = rgb.shape[0] * rgb.shape[1]
    row = {}
    for v in VERSIONS:
        data, y_hat = cem.compress(y, psi[v], version=v)
        assert v < 4 or len(data) == info["y_bytes"]
        stats = {}
        t = time.perf_counter()
        decoded = cem.decompress(data, psi[v], stats=stats, version=v)
        total = 1000 * (time.perf_counter() - t)
        assert torch.equal(decoded.long(), y_hat.long())
        row[v] = {"y_bytes": len(data), "y_decode_ms": total, "y_coding_ms": 1000 * stats["coding_seconds"]}
    out = {f"bpp_v{v}": 8 * (other + row[v]["y_bytes"]) / pixels for v in VERSIONS}
    for v in VERSIONS:
        out[f"y_decode_ms_v{v}"] = row[v]["y_decode_ms"]
        out[f"y_coding_ms_v{v}"] = row[v]["y_coding_ms"]
    slabs = egr(torch.round(y), m.cfg.N_cs)
    k = m.cfg.k_m
    q_fixed = quantize(parameters(cem.fixed_point(), psi[2], slabs.long()).reshape(-1, 3, k))
    q_float = quantize(parameters(cem, psi[1], slabs).reshape(-1, 3, k))
    out["params_differing"] = sum((a != b).sum().item() for a, b in zip(q_fixed, q_float)) / (3 * q_fixed[0].numel())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(ecf_engine.QUALITIES))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "formats-kodak.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(KODAK.glob("*.png"))[:args.images]
    if not paths:
        raise SystemExit(f"no Kodak images in {KODAK}")
    rows = []
    for name in args.models:
        engine = ecf_engine.load(name)
        measure(engine, np.asarray(Image.open(paths[0]).convert("RGB")))      # warm-up (builds, caches)
        per = [measure(engine, np.asarray(Image.open(p).convert("RGB"))) for p in tqdm(paths, desc=name)]
        row = {"model": name, "images": len(per)}
        for key in per[0]:
            row[key] = float(np.mean([r[key] for r in per]))
        row["fixed_point_cost_percent"] = 100 * (row["bpp_v2"] / row["bpp_v1"] - 1)
        row["rans_v3_cost_percent"] = 100 * (row["bpp_v3"] / row["bpp_v2"] - 1)
        row["rans_substreams_cost_percent"] = 100 * (row["bpp_v4"] / row["bpp_v2"] - 1)
        row["worst_image_v4_vs_v1_percent"] = max(100 * (r["bpp_v4"] / r["bpp_v1"] - 1) for r in per)
        rows.append(row)
    print(f"\nKodak ({len(paths)} images), {machine()}, {args.threads} threads; means per image")
    print("| model | bpp v1 | bpp v2 | bpp v3 | bpp v4 | v2 vs v1 | v3 vs v2 | v4 vs v2 | quantized params ≠ float "
          "| y decode ms v1 / v2 / v3 / v4 (coding) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = " / ".join(f"{r[f'y_decode_ms_v{v}']:.0f} ({r[f'y_coding_ms_v{v}']:.0f})" for v in VERSIONS)
        print(f"| {r['model']} | {r['bpp_v1']:.4f} | {r['bpp_v2']:.4f} | {r['bpp_v3']:.4f} | {r['bpp_v4']:.4f} "
              f"| {r['fixed_point_cost_percent']:+.3f} % | {r['rans_v3_cost_percent']:+.3f} % "
              f"| {r['rans_substreams_cost_percent']:+.3f} % | {100 * r['params_differing']:.2f} % | {ms} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
