"""Round-trip every image of a folder through the real `ecf encode` / `ecf decode` CLI and
check the decoded PNG is bit-identical to the model's own reconstruction of round(g_a(x)).
Encoding runs with 2 threads, decoding with 1 (OMP_NUM_THREADS), so the check also covers
decoding on another thread count than encoding.

    python benchmarks/kodak_roundtrip.py [--folder ../shared/data/kodak] [--model default]

Writes benchmarks/results/roundtrip-<model>.json; exits 1 if any image differs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import ecf_engine
from ecf_engine.evaluate import machine
from ecf_engine.train import image_files

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=str(ROOT.parent / "shared" / "data" / "kodak"))
    p.add_argument("--model", default="default")
    args = p.parse_args()
    engine = ecf_engine.load(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in tqdm(image_files(args.folder), desc="roundtrip"):
            ecf, png = Path(tmp) / f"{path.stem}.ecf", Path(tmp) / f"{path.stem}.png"
            t = time.perf_counter()
            subprocess.run(["ecf", "encode", str(path), "-o", str(ecf), "--model", args.model], check=True,
                           capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
            t_enc = time.perf_counter() - t
            t = time.perf_counter()
            subprocess.run(["ecf", "decode", str(ecf), "-o", str(png)], check=True, capture_output=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            t_dec = time.perf_counter() - t
            rgb = np.asarray(Image.open(path).convert("RGB"))
            decoded = np.asarray(Image.open(png))
            rows.append({"image": path.name, "bytes": ecf.stat().st_size,
                         "bit_exact": bool(np.array_equal(decoded, engine.reconstruct(rgb))),
                         "cli_encode_s": t_enc, "cli_decode_s": t_dec})
    ok = all(r["bit_exact"] for r in rows)
    result = {"model": args.model, "model_id": engine.model_id.hex(), "folder": args.folder, "images": len(rows),
              "all_bit_exact": ok, "machine": machine(),
              "threads": {"encode": 2, "decode": 1},
              "note": "CLI times include process start-up and model loading", "per_image": rows}
    out = ROOT / "benchmarks" / "results" / f"roundtrip-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{sum(r['bit_exact'] for r in rows)}/{len(rows)} images decoded bit-exactly via the CLI; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
