"""Decode time against pixel count, 256x256 to 4K, as a table, JSON and a log-log plot.

    python benchmarks/scaling.py [--model default] [--repeat 3] [--threads 2]

The paper reports that a 4K image (21x Kodak's pixels) takes only ~14x Kodak's time on
its GPU; this measures our engine on the machine at hand. Needs matplotlib for the plot
(pip install -e ".[bench]"). Writes benchmarks/results/scaling-<device>.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecf_engine.evaluate import machine

sys.path.insert(0, str(Path(__file__).parent))
from speed import bench, timing_options, timing_setup  # noqa: E402  (sibling script)

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["256x256", "512x512", "768x512", "1280x720", "1920x1080", "2560x1440", "3840x2160"]
KODAK_PIXELS = 768 * 512


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    timing_options(p, repeat=3)
    args = p.parse_args()
    device = timing_setup(args)
    rows = []
    print(f"{'size':>11}{'Mpx':>7}{'x Kodak px':>12}{'decode ms':>11}{'x Kodak time':>14}{'coding ms':>11}")
    for size in SIZES:
        w, h = map(int, size.split("x"))
        r = bench(args.model, w, h, args.repeat, device)
        rows.append({"size": size, "pixels": w * h, "decode_ms": r["decode_ms"],
                     "decode_coding_ms": r["decode_coding_ms"], "encode_ms": r["encode_ms"]})
    kodak_ms = next(r["decode_ms"]["median"] for r in rows if r["size"] == "768x512")
    for r in rows:
        r["pixel_ratio_to_kodak"] = r["pixels"] / KODAK_PIXELS
        r["time_ratio_to_kodak"] = r["decode_ms"]["median"] / kodak_ms
        print(f"{r['size']:>11}{r['pixels'] / 1e6:>7.2f}{r['pixel_ratio_to_kodak']:>12.2f}"
              f"{r['decode_ms']['median']:>11.0f}{r['time_ratio_to_kodak']:>14.2f}{r['decode_coding_ms']['median']:>11.0f}")
    out = ROOT / "benchmarks" / "results" / f"scaling-{device.type}"
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": machine(), "device": str(device), "model": args.model, "repeat": args.repeat,
         "note": "median decode time of `repeat` runs after one warm-up per size", "rows": rows}, indent=2))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return
    px = [r["pixels"] / 1e6 for r in rows]
    ms = [r["decode_ms"]["median"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(px, ms, "o-", label="decode, measured")
    ax.loglog(px, [kodak_ms * p / (KODAK_PIXELS / 1e6) for p in px], "--", color="gray", label="linear in pixels (from Kodak)")
    for r, x, y in zip(rows, px, ms):
        ax.annotate(r["size"], (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("megapixels")
    ax.set_ylabel("decode time [ms]")
    ax.set_title(f"ecf_engine {args.model}: decode time vs. size\n{machine()}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
