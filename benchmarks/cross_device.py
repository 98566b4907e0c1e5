"""Streams across devices: encode on the GPU and decode on the CPU, and the other way round.

    python benchmarks/cross_device.py [--model default] [--folder ../shared/data/kodak]

For every image: the CPU and the GPU encoder must write the same stream (the coded
integers come from fixed-point arithmetic); each decoder must decode the other's stream
to the latents the encoder coded; and the decoded images are compared (g_s runs in float
on each device, so a few pixels may differ by rounding: reported, not required equal).
Needs a CUDA GPU; without one it says so and exits with status 2.
Writes benchmarks/results/cross-device.json and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import ecf_engine
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "kodak")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cross-device.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("cross_device.py needs a CUDA GPU; none is available here", file=sys.stderr)
        return 2
    cpu, gpu = ecf_engine.load(args.model, device="cpu"), ecf_engine.load(args.model, device="cuda")
    rows = []
    for path in tqdm(sorted(args.folder.glob("*.png")), desc="images"):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        on_cpu, cpu_stats = cpu.encode_with_stats(rgb)
        on_gpu, gpu_stats = gpu.encode_with_stats(rgb)
        row = {"image": path.name, "same_stream": on_cpu == on_gpu}
        for name, (bits, enc_stats), decoder in (("gpu->cpu", (on_gpu, gpu_stats), cpu),
                                                  ("cpu->gpu", (on_cpu, cpu_stats), gpu)):
            try:
                image, dec_stats = decoder.decode_with_stats(bits)
                row[name] = {"latents_equal": bool(torch.equal(dec_stats["y_hat"].cpu().long(),
                                                               enc_stats["y_hat"].cpu().long())),
                             "pixels_differing": int((image != decoder.reconstruct(rgb)).any(-1).sum())}
            except ecf_engine.ECFError as e:
                row[name] = {"error": str(e)}
        a, b = cpu.decode(on_cpu), gpu.decode(on_gpu)
        row["cpu_vs_gpu_image_pixels_differing"] = int((a != b).any(-1).sum())
        rows.append(row)
    ok = all(r["same_stream"] and all(r[k].get("latents_equal") for k in ("gpu->cpu", "cpu->gpu")) for r in rows)
    summary = {"machine": machine(), "gpu": torch.cuda.get_device_name(), "model": args.model,
               "images": len(rows), "all_streams_equal_and_cross_decoded": ok, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"{len(rows)} images on {summary['gpu']}: streams equal and cross-decoded to the coded latents: {ok}; "
          f"max pixels differing between CPU and GPU images: "
          f"{max(r['cpu_vs_gpu_image_pixels_differing'] for r in rows)}; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
