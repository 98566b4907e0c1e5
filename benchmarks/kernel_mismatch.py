"""How many quantized entropy parameters change when the attention runs in the Triton kernels.

    python benchmarks/kernel_mismatch.py [IMAGE ...] [--model default] [--crop 64]

The coder sees integers: quantize_gmm(raw float parameters). Kernel and reference agree
only to ~1e-6 (another summation order), and a parameter that lies that close to a rounding
boundary rounds differently: then the encoder and a decoder on the other path disagree and
the stream does not decode. This runs the coding schedule (teacher-forced: both paths see
the same y_hat) once with ECF_BACKEND=torch and once with ECF_BACKEND=triton, and counts
the quantized parameters (weight logits, means, log-scales) that differ, per group.
On a CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, slow: a 768x512
image takes minutes). Writes benchmarks/results/kernel-mismatch-<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")        # before the kernels are imported

import ecf_engine                                           # noqa: E402
from ecf_engine import ops, schedule                        # noqa: E402
from ecf_engine.detmath import thread_invariant_kernels    # noqa: E402
from ecf_engine.engine import to_input                     # noqa: E402
from ecf_engine.entropy import quantize_gmm                 # noqa: E402
from ecf_engine.evaluate import machine                     # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_rgb(path: Path, crop: int | None) -> np.ndarray:
    from PIL import Image
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(rgb[:crop, :crop]) if crop else rgb


@torch.no_grad()
@thread_invariant_kernels()
def quantized_params(engine, rgb: np.ndarray, backend: str, device) -> tuple[list, list]:
    """Integer GMM parameters of every group, and the raw floats, with ECF_BACKEND=backend."""
    os.environ["ECF_BACKEND"] = backend
    m = engine.model
    y_hat = torch.round(m.g_a(to_input(rgb).to(device)))
    psi = m.h_s(torch.round(m.h_a(y_hat)))
    raws = [raw.float().reshape(-1, 3, engine.cfg.k_m) for raw in schedule.teacher_forced(m.context_model, psi, y_hat)]
    ints = [quantize_gmm(raw) for raw in raws]
    return ints, raws


def compare(engine, rgb, device) -> dict:
    t = time.perf_counter()
    ref_ints, ref_raws = quantized_params(engine, rgb, "torch", device)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    k_ints, k_raws = quantized_params(engine, rgb, "triton", device)
    t_kernel = time.perf_counter() - t
    ran = ops.last_run().get(("cached_attention", device.type), ("?", ""))[0]
    if ran != "triton":
        raise SystemExit(f"the kernels did not run (ran: {ran}); see ecf_engine.backend_report()")
    per_group, total, params = [], 0, 0
    for g, (a, b) in enumerate(zip(ref_ints, k_ints)):
        diff = [int((x != y).sum()) for x, y in zip(a, b)]        # logits, means, log-scales
        per_group.append({"group": g, "logits": diff[0], "means": diff[1], "log_scales": diff[2]})
        total += sum(diff)
        params += sum(x.numel() for x in a)
    max_raw = max((x - y).abs().max().item() for x, y in zip(ref_raws, k_raws))
    return {"size": list(rgb.shape[:2]), "quantized_params": params, "differing": total,
            "fraction": total / params, "max_abs_raw_diff": max_raw, "per_group": per_group,
            "seconds": {"torch": t_ref, "triton": t_kernel}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", type=Path, default=[ROOT / "ecf_engine" / "data" / "sample.png"])
    p.add_argument("--model", default="default")
    p.add_argument("--crop", type=int, default=None, help="top-left crop (pixels per side)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    engine = ecf_engine.load(args.model)
    engine.model.to(device)
    rows = []
    for path in args.images:
        r = {"image": path.name, **compare(engine, load_rgb(path, args.crop), device)}
        rows.append(r)
        print(f"{path.name} {r['size'][1]}x{r['size'][0]}: {r['differing']} of {r['quantized_params']} quantized "
              f"parameters differ ({100 * r['fraction']:.4f} %), max |raw diff| {r['max_abs_raw_diff']:.2e}; "
              f"torch {r['seconds']['torch']:.1f} s, triton {r['seconds']['triton']:.1f} s")
    out = ROOT / "benchmarks" / "results" / f"kernel-mismatch-{device.type}.json"
    out.write_text(json.dumps({"machine": machine(), "model": args.model, "crop": args.crop,
                               "interpreted": device.type == "cpu", "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
