"""Compare candidate weights with the shipped ones on Kodak, at equal rate.

    python benchmarks/rd.py --codecs none --no-readme --out /tmp/cand \\
        --models runs/b-mse0004/best.safetensors,runs/b-mse0014/best.safetensors
    python benchmarks/compare_rd.py /tmp/cand.json      # against benchmarks/results/rd-kodak.json

Both files are `benchmarks/rd.py` JSON. Each candidate is paired with the base point
nearest in rate (the rate points are ~35 % apart, a retrained model moves < 1 %). A
retrained model rarely lands at exactly the old rate, so PSNR alone would mix rate and
quality: the gain is taken at equal rate, per image,

    gain = (PSNR_new - PSNR_old) - slope * (bpp_new - bpp_old)

with `slope` the local dPSNR/dbpp of that image's base curve (secant through the
neighbouring rate points, one-sided at the ends). The table gives the mean gain, how many
images gain, and the BD-rate of the base curve with the candidates swapped in against the
base curve. Decoding is bit-exact, so base numbers from an earlier run are exact, not stale.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ecf_engine.bdrate import bd_rate  # noqa: E402


def ours_points(path: Path, key: str) -> list[dict]:
    data = json.loads(path.read_text())
    if key not in data.get("codecs", {}):
        raise SystemExit(f"{path} has no {key!r} entry (codecs: {', '.join(data.get('codecs', {})) or 'none'})")
    return sorted(data["codecs"][key]["points"], key=lambda p: p["bpp"])


def per_image(point: dict) -> dict[str, dict]:
    return {r["image"]: r for r in point["per_image"]}


def local_slope(curve: list[dict[str, dict]], i: int, image: str) -> float:
    """dPSNR/dbpp of one image's base curve (per_image of each base point) at point i."""
    a, b = curve[max(i - 1, 0)][image], curve[min(i + 1, len(curve) - 1)][image]
    return (b["psnr"] - a["psnr"]) / (b["bpp"] - a["bpp"])


def compare(base: list[dict], cand: list[dict]) -> tuple[list[dict], float | None]:
    if len(base) < 2:
        raise SystemExit("the base needs at least two rate points for a local slope")
    rows, swapped, curve = [], list(base), [per_image(b) for b in base]
    for c in cand:
        i = int(np.argmin([abs(np.log(c["bpp"] / b["bpp"])) for b in base]))
        old, new = curve[i], per_image(c)
        if set(old) != set(new):
            raise SystemExit(f"{c['setting']} and {base[i]['setting']} were measured on different images")
        gains = [(new[k]["psnr"] - old[k]["psnr"]) - local_slope(curve, i, k) * (new[k]["bpp"] - old[k]["bpp"])
                 for k in old]
        rows.append({"base": base[i], "cand": c, "gain_db": float(np.mean(gains)),
                     "wins": sum(g > 1e-9 for g in gains), "images": len(gains)})
        swapped[i] = c
    bd = None
    if len(base) >= 4:
        bd = bd_rate([p["bpp"] for p in base], [p["psnr"] for p in base],
                     [p["bpp"] for p in swapped], [p["psnr"] for p in swapped])
    return rows, bd


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", type=Path, help="rd.py JSON with the candidate models")
    p.add_argument("--base", type=Path, default=HERE / "results" / "rd-kodak.json",
                   help="rd.py JSON with the shipped models (default: %(default)s)")
    p.add_argument("--key", default="ours", help="entry to compare, e.g. ours-rdo (default: ours)")
    args = p.parse_args(argv)
    rows, bd = compare(ours_points(args.base, args.key), ours_points(args.candidates, args.key))
    print("| base | candidate | bpp | PSNR | MS-SSIM | at equal rate | images that gain |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b, c = r["base"], r["cand"]
        print(f"| {b['setting']} | {c['setting']} | {b['bpp']:.4f} → {c['bpp']:.4f} | "
              f"{b['psnr']:.3f} → {c['psnr']:.3f} | {b['ms_ssim']:.4f} → {c['ms_ssim']:.4f} | "
              f"{r['gain_db']:+.3f} dB | {r['wins']}/{r['images']} |")
    if bd is not None:
        print(f"\nBD-rate (PCHIP) of the base curve with these candidates swapped in: {bd:+.2f} %")


if __name__ == "__main__":
    main()
