"""Transform ceiling: the PSNR the analysis / synthesis transforms reach with no quantization.

    python -m benchmarks ceiling                          # Kodak, the shipped models (small-vr at Q 1, 4, 7)
    python -m benchmarks ceiling --models small-vr --qualities 7 --limit 4

For each image: g_s(g_a(x)) with y unquantized, with y rounded (what the coder codes), and
with y rounded to half steps (twice as fine, as a higher rate would give). When the
unquantized PSNR is barely above the rounded one, more rate cannot buy much more quality:
the transforms, not the entropy model, cap the top of the curve. Images are padded to
multiples of 64 as the coder does, and the padding is cropped before the PSNR. Writes
benchmarks/results/ceiling-kodak.json and prints a table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .harness import KODAK, RESULTS, rgb_image, set_threads, write_result


def add_arguments(p) -> None:
    p.add_argument("--folder", type=Path, default=KODAK, help="images (default: %(default)s)")
    p.add_argument("--models", default="small-vr",
                   help="comma-separated shipped names or .safetensors paths (default: %(default)s)")
    p.add_argument("--qualities", default="1,4,7", help="qualities of a variable-rate model (default: %(default)s)")
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=RESULTS / "ceiling-kodak.json")


LATENTS = {"unquantized": lambda y: y, "rounded": torch.round, "half steps": lambda y: torch.round(2 * y) / 2}


@torch.no_grad()
def ceiling(engine, images: dict, quality: float | None) -> dict:
    from ecf_engine.engine import to_images, to_input
    from ecf_engine.metrics import psnr
    m = engine.model
    gain, inv_gain = m.gains(quality) if quality is not None else (1.0, 1.0)
    per = {k: [] for k in LATENTS}
    for rgb in images.values():
        y = m.g_a(to_input(rgb)) * gain
        for k, q in LATENTS.items():
            out = to_images(m.g_s(q(y) * inv_gain), *rgb.shape[:2])[0]
            per[k].append(psnr(rgb, out))
    return {k: {"psnr": float(np.mean(v)), "per_image": v} for k, v in per.items()}


def run(args) -> int:
    import ecf_engine
    from ecf_engine.train import image_files
    set_threads(args.threads)
    files = image_files(args.folder)[:args.limit]
    images = {f.name: rgb_image(f) for f in files}
    rows = []
    for name in args.models.split(","):
        engine = ecf_engine.load(name)
        for q in ([float(v) for v in args.qualities.split(",")] if engine.variable_rate else [None]):
            r = ceiling(engine, images, q)
            rows.append({"model": name, "model_id": engine.model_id.hex(), "quality": q, **r})
            print(f"{name}{'' if q is None else f' Q{q:g}'}: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in r.items()),
                  flush=True)
    print(f"\n{len(images)} images from {args.folder}, mean RGB PSNR of g_s(g_a(x))\n")
    print("| model | " + " | ".join(f"y {k}" for k in LATENTS) + " |")
    print("|---|" + "---|" * len(LATENTS))
    for r in rows:
        label = r["model"] + ("" if r["quality"] is None else f" (Q {r['quality']:g})")
        print(f"| {label} | " + " | ".join(f"{r[k]['psnr']:.2f} dB" for k in LATENTS) + " |")
    write_result(args.out, {"folder": str(args.folder), "images": list(images), "rows": rows})
    return 0
