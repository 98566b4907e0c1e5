"""Rate control of a variable-rate model: how close `encode(target_bpp=B)` (`ecf encode --bpp B`)
and `target_psnr=P` (`--psnr P`) land on every image.

    python -m benchmarks rate                          # Kodak, --bpp 0.3 0.5 0.7 and --psnr 30, small-vr
    python -m benchmarks rate --bpp 0.25 0.5 --psnr 30 --model small-vr --limit 4

For each target and image: the real file's bpp (8 * bytes / pixels) or the decoded image's
RGB PSNR, its error against the target, the quality the search chose and the encode time
with the search. A target outside what the model reaches on an image is not a miss: the
encoder refuses it with a RateError naming the reachable end, and the row records that.
Promise (engine.encode): within 2 % of a bpp target, 0.05 dB of a PSNR target. Writes
benchmarks/results/rate-control.json and prints a table per target.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

import ecf_engine
from ecf_engine.errors import RateError
from ecf_engine.metrics import psnr

from .harness import KODAK, RESULTS, rgb_image, set_threads, write_result

BPP_PROMISE = 0.02           # relative
PSNR_PROMISE = 0.05          # dB


def add_arguments(p) -> None:
    p.add_argument("--folder", type=Path, default=KODAK, help="images (default: %(default)s)")
    p.add_argument("--model", default="small-vr", help="a variable-rate model: shipped name or .safetensors "
                   "(default: %(default)s)")
    p.add_argument("--bpp", type=float, nargs="*", default=[0.3, 0.5, 0.7], help="bpp targets (default 0.3 0.5 0.7)")
    p.add_argument("--psnr", type=float, nargs="*", default=[30.0], help="PSNR targets in dB (default 30)")
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=RESULTS / "rate-control.json")


def _one(engine, rgb, kind: str, target: float) -> dict:
    t = time.perf_counter()
    try:
        bits = engine.encode(rgb, **{f"target_{kind}": target}, metadata={})
    except RateError as e:
        return {"reachable": False, "message": str(e)}
    ms = 1000 * (time.perf_counter() - t)
    header = ecf_engine.read_header(bits)
    if kind == "bpp":
        value = 8 * len(bits) / (rgb.shape[0] * rgb.shape[1])
        error, ok = value / target - 1, abs(value / target - 1) <= BPP_PROMISE
    else:
        value = psnr(rgb, engine.decode(bits))
        error, ok = value - target, abs(value - target) <= PSNR_PROMISE
    return {"reachable": True, "value": value, "error": error, "within_promise": ok, "quality": header.quality,
            "encode_ms": ms}


def run(args) -> int:
    from ecf_engine.train import image_files
    set_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise SystemExit("--limit must be >= 1")
    if not args.bpp and not args.psnr:
        raise SystemExit("give at least one --bpp or --psnr target")
    engine = ecf_engine.load(args.model)
    if not engine.variable_rate:
        raise SystemExit(f"{args.model} is a fixed-rate model: rate control needs a variable-rate one")
    files = image_files(args.folder)[:args.limit]
    images = {f.name: rgb_image(f) for f in files}
    targets = [("bpp", b) for b in args.bpp] + [("psnr", p) for p in args.psnr]
    engine.encode(next(iter(images.values())), quality=4.0, metadata={})     # warm-up, not timed
    results = []
    for kind, target in targets:
        rows = []
        for name, rgb in images.items():
            rows.append({"image": name, **_one(engine, rgb, kind, target)})
            r = rows[-1]
            print(f"  {kind} {target:g} {name}: " + (f"{r['value']:.4f} (Q {r['quality']:.3f}, {r['encode_ms']:.0f} ms)"
                                                      if r["reachable"] else "unreachable"), flush=True)
        hit = [r for r in rows if r["reachable"]]
        summary = {"kind": kind, "target": target, "images": len(rows), "reachable": len(hit),
                   "within_promise": sum(r["within_promise"] for r in hit),
                   "max_abs_error": max((abs(r["error"]) for r in hit), default=None),
                   "median_encode_ms": statistics.median([r["encode_ms"] for r in hit]) if hit else None,
                   "rows": rows}
        results.append(summary)
    unit = {"bpp": "relative", "psnr": "dB"}
    print(f"\nmodel {engine.name} ({engine.model_id.hex()}), {len(images)} images from {args.folder}, "
          f"{torch.get_num_threads()} thread(s)\n")
    print("| target | images reachable | within the promise | largest error | median encode (with the search) |")
    print("|---|---|---|---|---|")
    for s in results:
        err = s["max_abs_error"]
        err = "-" if err is None else f"{100 * err:.2f} %" if s["kind"] == "bpp" else f"{err:.3f} dB"
        ms = "-" if s["median_encode_ms"] is None else f"{s['median_encode_ms']:.0f} ms"
        promise = f"{100 * BPP_PROMISE:g} %" if s["kind"] == "bpp" else f"{PSNR_PROMISE:g} dB"
        print(f"| {s['target']:g} {s['kind']} | {s['reachable']}/{s['images']} | {s['within_promise']}/{s['reachable']} "
              f"(≤ {promise}) | {err} | {ms} |")
    write_result(args.out, {"model": engine.name, "model_id": engine.model_id.hex(), "folder": str(args.folder),
                            "promise": {"bpp_relative": BPP_PROMISE, "psnr_db": PSNR_PROMISE}, "errors_are": unit,
                            "targets": results})
    return 0 if all(s["within_promise"] == s["reachable"] for s in results) else 1
