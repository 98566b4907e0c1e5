"""What encoder-side online RDO (oRDO) buys: BD-rate with vs without it, and its encode time.

    python benchmarks/rdo.py [--limit 8] [--iters 26] [--models small-mse0004 ...] [--paper-schedule]

Every shipped rate model (ecf_engine.weights.QUALITIES) encodes the same Kodak images
twice, plainly and with `rdo_iters`; each stream is decoded by the unchanged decoder and
scored (real bytes, RGB PSNR per image then averaged). BD-rate (PCHIP) of the oRDO curve
against the plain one needs >= 4 models. Writes benchmarks/results/rdo-kodak.json and
prints a table. The paper reports ~3.8 % extra savings from oRDO.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import ecf_engine
from ecf_engine import rdo
from ecf_engine.bdrate import MIN_POINTS, bd_psnr, bd_rate
from ecf_engine.evaluate import machine
from ecf_engine.metrics import psnr
from ecf_engine.train import image_files

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def run_model(name: str, files: list[Path], iters: int) -> dict:
    engine = ecf_engine.load(name)
    engine.decode(engine.encode(np.asarray(Image.open(files[0]).convert("RGB"))[:64, :64]))   # warm-up
    rows = []
    for path in tqdm(files, desc=name, dynamic_ncols=True):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        row = {"image": path.name}
        for mode, n in (("plain", 0), ("rdo", iters)):
            t = time.perf_counter()
            bits = engine.encode(rgb, rdo_iters=n)
            row[f"{mode}_encode_s"] = time.perf_counter() - t
            row[f"{mode}_bpp"] = 8 * len(bits) / (rgb.shape[0] * rgb.shape[1])
            row[f"{mode}_psnr"] = psnr(rgb, engine.decode(bits))
        rows.append(row)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    return {"model": name, "lmbda": engine.cfg.lmbda, "mean": mean, "per_image": rows}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=str(KODAK))
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--iters", type=int, default=26)
    p.add_argument("--paper-schedule", action="store_true",
                   help="the paper's lr 0.062 x0.72^i instead of rdo.SCHEDULES (for an A/B on the same models)")
    p.add_argument("--models", nargs="+", default=ecf_engine.QUALITIES)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "rdo-kodak.json"))
    args = p.parse_args(argv)
    files = image_files(args.folder)[:args.limit]
    if args.paper_schedule:
        rdo.SCHEDULES[:] = [(1, rdo.PAPER_LR, rdo.PAPER_DECAY)]
    results = [run_model(name, files, args.iters) for name in args.models]

    print(f"\n{'model':<16}{'bpp':>8}{'PSNR':>8}{'bpp oRDO':>10}{'PSNR oRDO':>11}{'enc s':>8}{'enc s oRDO':>12}")
    for r in results:
        m = r["mean"]
        print(f"{r['model']:<16}{m['plain_bpp']:>8.4f}{m['plain_psnr']:>8.2f}{m['rdo_bpp']:>10.4f}"
              f"{m['rdo_psnr']:>11.2f}{m['plain_encode_s']:>8.2f}{m['rdo_encode_s']:>12.2f}")
    curve = {mode: ([r["mean"][f"{mode}_bpp"] for r in results], [r["mean"][f"{mode}_psnr"] for r in results])
             for mode in ("plain", "rdo")}
    summary = {"images": len(files), "folder": args.folder, "iters": args.iters,
               "schedule": rdo.SCHEDULES, "machine": machine(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "models": results}
    if len(results) >= MIN_POINTS:
        summary["bd_rate_percent"] = bd_rate(*curve["plain"], *curve["rdo"])
        summary["bd_psnr_db"] = bd_psnr(*curve["plain"], *curve["rdo"])
        print(f"oRDO vs plain over {len(files)} images: BD-rate {summary['bd_rate_percent']:+.2f} % "
              f"(PCHIP), BD-PSNR {summary['bd_psnr_db']:+.3f} dB")
    else:
        print(f"BD-rate needs >= {MIN_POINTS} rate models (have {len(results)})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json}; machine: {summary['machine']}")


if __name__ == "__main__":
    main()
