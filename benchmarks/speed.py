"""Encode / decode time per image, split into network and entropy coding (decode also into
h_s, the 7 context-model steps, g_s and the rest), plus peak memory.

    python benchmarks/speed.py [--models default paper] [--sizes 768x512 1920x1080 3840x2160]
                               [--repeat 5] [--threads 2] [--device cpu]

Content: a Kodak image tiled / cropped to each size (timing depends a little on content
through the entropy coder). One warm-up encode+decode per (model, size) is reported
separately; then the median and min/max of --repeat runs. CUDA timings synchronize.
Writes benchmarks/results/speed-<device>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ecf_engine
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "ecf_engine" / "data" / "sample.png"


def test_image(width: int, height: int) -> np.ndarray:
    src = ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"
    rgb = np.asarray(Image.open(src if src.exists() else SAMPLE).convert("RGB"))
    reps = (-(-height // rgb.shape[0]), -(-width // rgb.shape[1]), 1)
    return np.ascontiguousarray(np.tile(rgb, reps)[:height, :width])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, 1000 * (time.perf_counter() - t)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


DECODE_PARTS = ("hyper", "context", "synthesis", "other")     # decode_with_stats' split besides coding


def bench(name: str, width: int, height: int, repeat: int, device) -> dict:
    engine = ecf_engine.load(name, device=device)
    rgb = test_image(width, height)
    (bits, _), warm_enc = timed(lambda: engine.encode_with_stats(rgb), device)
    _, warm_dec = timed(lambda: engine.decode_with_stats(bits), device)
    rows = {"encode_ms": [], "encode_coding_ms": [], "decode_ms": [], "decode_coding_ms": []}
    rows.update({f"decode_{part}_ms": [] for part in DECODE_PARTS})
    for _ in range(repeat):
        (bits, enc), ms = timed(lambda: engine.encode_with_stats(rgb), device)
        rows["encode_ms"].append(ms)
        rows["encode_coding_ms"].append(enc["coding_ms"])
        (_, dec), ms = timed(lambda: engine.decode_with_stats(bits), device)
        rows["decode_ms"].append(ms)
        rows["decode_coding_ms"].append(dec["coding_ms"])
        for part in DECODE_PARTS:
            rows[f"decode_{part}_ms"].append(dec[f"{part}_ms"])
    rows["encode_network_ms"] = [a - b for a, b in zip(rows["encode_ms"], rows["encode_coding_ms"])]
    rows["decode_network_ms"] = [a - b for a, b in zip(rows["decode_ms"], rows["decode_coding_ms"])]
    return {"model": name, "size": f"{width}x{height}", "bytes": len(bits), "bpp": 8 * len(bits) / (width * height),
            "warmup_encode_ms": warm_enc, "warmup_decode_ms": warm_dec,
            **{k: summary(v) for k, v in rows.items()},
            "peak_rss_mb_so_far": peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None}


def timing_options(p: argparse.ArgumentParser, repeat: int) -> None:
    p.add_argument("--repeat", type=int, default=repeat)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")


def timing_setup(args) -> torch.device:
    torch.set_num_threads(args.threads)
    return torch.device(args.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["default"])
    p.add_argument("--sizes", nargs="+", default=["768x512", "1920x1080", "3840x2160"])
    timing_options(p, repeat=5)
    args = p.parse_args()
    device = timing_setup(args)
    rows = []
    print(f"{'model':<10}{'size':>11}{'bpp':>8}{'enc ms':>10}{'(coding)':>10}{'dec ms':>10}{'(coding)':>10}"
          f"{'h_s':>7}{'context':>9}{'g_s':>7}{'other':>7}{'warm-up dec':>13}{'peak RSS MB':>13}")
    for name in args.models:
        for size in args.sizes:
            w, h = map(int, size.split("x"))
            r = bench(name, w, h, args.repeat, device)
            rows.append(r)
            print(f"{name:<10}{size:>11}{r['bpp']:>8.3f}{r['encode_ms']['median']:>10.0f}"
                  f"{r['encode_coding_ms']['median']:>10.0f}{r['decode_ms']['median']:>10.0f}"
                  f"{r['decode_coding_ms']['median']:>10.0f}"
                  + "".join(f"{r[f'decode_{part}_ms']['median']:>{w}.0f}" for part, w in zip(DECODE_PARTS, (7, 9, 7, 7)))
                  + f"{r['warmup_decode_ms']:>13.0f}{r['peak_rss_mb_so_far']:>13.0f}")
    out = ROOT / "benchmarks" / "results" / f"speed-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out.write_text(json.dumps({"machine": machine(), "device": str(device), "gpu": gpu, "repeat": args.repeat,
                               "note": "medians over `repeat` runs after one warm-up run; peak RSS is the "
                                       "process high-water mark up to that row", "rows": rows}, indent=2))
    print(f"wrote {out} ({machine()})")


if __name__ == "__main__":
    main()
