"""Compare candidate weights with the shipped ones on Kodak, at equal rate.

    python -m benchmarks rd --codecs none --out /tmp/cand \\
        --models runs/b-mse0004/best.safetensors,runs/b-mse0014/best.safetensors
    python -m benchmarks compare /tmp/cand.json       # against benchmarks/results/rd-kodak.json

Both files are `python -m benchmarks rd` JSON; a variable-rate candidate's quality points
pair with the base points nearest in rate like separate models do. Each candidate is paired with the base point
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

import json
from pathlib import Path

import numpy as np

from ecf_engine.bdrate import bd_rate

from .harness import RESULTS


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
    rows, swapped, curve, used = [], list(base), [per_image(b) for b in base], set()
    for c in cand:
        i = int(np.argmin([abs(np.log(c["bpp"] / b["bpp"])) for b in base]))
        old, new = curve[i], per_image(c)
        if set(old) != set(new):
            raise SystemExit(f"{label(c)} and {label(base[i])} were measured on different images")
        gains = [(new[k]["psnr"] - old[k]["psnr"]) - local_slope(curve, i, k) * (new[k]["bpp"] - old[k]["bpp"])
                 for k in old]
        rows.append({"base": base[i], "cand": c, "gain_db": float(np.mean(gains)),
                     "wins": sum(g > 1e-9 for g in gains), "images": len(gains)})
        swapped[i] = c
        used.add(i)
    bd = None          # swapping only makes sense where each candidate replaces its own base point
    if len(base) >= 4 and len(used) == len(cand):
        bd = bd_rate([p["bpp"] for p in base], [p["psnr"] for p in base],
                     [p["bpp"] for p in swapped], [p["psnr"] for p in swapped])
    return rows, bd


def curve_bd(base: list[dict], cand: list[dict]) -> float | None:
    """BD-rate (PCHIP, over the common PSNR range) of the candidate curve against the base
    curve, e.g. a variable-rate model's Q points against the fixed-rate models; None with
    fewer than 4 points on either side or no overlap."""
    if len(base) < 4 or len(cand) < 4:
        return None
    try:
        return bd_rate([p["bpp"] for p in base], [p["psnr"] for p in base],
                       [p["bpp"] for p in cand], [p["psnr"] for p in cand])
    except ValueError:
        return None


def label(p: dict) -> str:
    return p["setting"] if p.get("quality") is None else f"{p['setting']} Q={p['quality']:g}"


def add_arguments(p) -> None:
    p.add_argument("candidates", type=Path, help="rd JSON with the candidate models")
    p.add_argument("--base", type=Path, default=RESULTS / "rd-kodak.json",
                   help="rd JSON with the shipped models (default: %(default)s)")
    p.add_argument("--key", default="ours", help="entry to compare, e.g. ours-rdo (default: ours)")


def run(args) -> int:
    for path in (args.base, args.candidates):
        if not path.is_file():
            raise SystemExit(f"{path} does not exist (write it with `python -m benchmarks rd --out ...`)")
    base, cand = ours_points(args.base, args.key), ours_points(args.candidates, args.key)
    rows, bd = compare(base, cand)
    print("| base | candidate | bpp | PSNR | MS-SSIM | at equal rate | images that gain |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b, c = r["base"], r["cand"]
        print(f"| {label(b)} | {label(c)} | {b['bpp']:.4f} → {c['bpp']:.4f} | "
              f"{b['psnr']:.3f} → {c['psnr']:.3f} | {b['ms_ssim']:.4f} → {c['ms_ssim']:.4f} | "
              f"{r['gain_db']:+.3f} dB | {r['wins']}/{r['images']} |")
    if bd is not None:
        print(f"\nBD-rate (PCHIP) of the base curve with these candidates swapped in: {bd:+.2f} %")
    direct = curve_bd(base, cand)
    if direct is not None:
        print(f"BD-rate (PCHIP) of the candidate curve against the base curve, common PSNR range: {direct:+.2f} %")
    return 0
