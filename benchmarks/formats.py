"""Rate and decode time of the y coding formats on Kodak, with the same latents, and what
exact (fixed-point) entropy parameters cost against the float model.

    python -m benchmarks formats [--models default ...] [--images N] [--threads N]

    y coding 3  fixed-point parameters (fixedpoint.py), integer tables, rANS over parallel
                substreams (rans.py, csrc/rans.c)
    y coding 4  as 3, with a varint substream table (~23 bytes less per Kodak image)

For every image and model, the same round(y) is coded in each y coding format (a
variable-rate model at its default quality): file bpp (header, z and CRC as the engine
writes them, identical for all), the decode time of y (7-step schedule + entropy decoding)
split into network and coding. Then four sizes of the same latents, from ideal to real:
the float networks' -log2 P, the fixed-point networks' -log2 P, the ideal length under the
integer tables the coder uses, and the payload; and the share of quantized GMM parameters
where the fixed-point networks differ from the float ones. Every format decodes the same
latents (checked). Writes benchmarks/results/formats-kodak.json and prints a markdown table.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ecf_engine import bitstream, schedule
from ecf_engine.context_entropy import VERSIONS
from ecf_engine.egr import egr
from ecf_engine.engine import to_input
from ecf_engine.entropy import quantize

from .harness import KODAK, RESULTS, rgb_image, set_threads, write_result


def parameters(net, psi, slabs):
    """Raw GMM parameters of every group from the 7-step schedule."""
    got = []
    schedule.run(net, psi, lambda g, raw: got.append(raw) or slabs[:, g])
    return torch.stack(got, 1)


@torch.no_grad()
def measure(engine, rgb: np.ndarray) -> dict:
    m, cem = engine.model, engine.model.context_model
    q = bitstream.coded_quality(engine.default_quality) if engine.variable_rate else None
    y, z = engine.analyze(to_input(rgb), q)
    z_hat = torch.round(z)
    psi_fixed, psi_float = engine.hyper(z_hat), m.h_s(z_hat)
    stream, info = engine.encode_with_stats(rgb, metadata={}, **({} if q is None else {"quality": q}))
    other = len(stream) - info["y_bytes"]                        # header, z payload, CRC
    pixels = rgb.shape[0] * rgb.shape[1]
    out = {}
    for v in VERSIONS:
        enc = {}
        data, y_hat = cem.compress(y, psi_fixed, stats=enc, version=v)
        dec = {}
        t = time.perf_counter()
        decoded = cem.decompress(data, psi_fixed, stats=dec, version=v)
        total = 1000 * (time.perf_counter() - t)
        if not torch.equal(decoded.long(), y_hat.long()):
            raise SystemExit(f"y coding {v} did not decode the latents it coded")
        out[f"bpp_v{v}"] = 8 * (other + len(data)) / pixels
        out[f"y_bytes_v{v}"] = len(data)
        out[f"y_decode_ms_v{v}"] = total
        out[f"y_coding_ms_v{v}"] = 1000 * dec["coding_seconds"]
    y_hat = torch.round(y)          # the sizes below are the same for every format: same tables
    out["y_bits_float_model"] = -torch.log2(cem(y_hat, psi_float)).sum().item()
    out["y_bits_fixed_point_model"] = enc["estimated_bits"]
    out["y_bits_integer_tables"] = enc["table_bits"]
    slabs = egr(y_hat, m.cfg.N_cs)
    k = m.cfg.k_m
    q_fixed = quantize(parameters(cem.fixed_point(), psi_fixed, slabs.long()).reshape(-1, 3, k))
    q_float = quantize(parameters(cem, psi_float, slabs).reshape(-1, 3, k))
    out["params_differing"] = sum((a != b).sum().item() for a, b in zip(q_fixed, q_float)) / (3 * q_fixed[0].numel())
    return out


def add_arguments(p) -> None:
    p.add_argument("--models", nargs="+", help="shipped names, paths or presets (default: the shipped models)")
    p.add_argument("--folder", type=Path, default=KODAK)
    p.add_argument("--images", type=int, default=24, help="first N images of the folder")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=RESULTS / "formats-kodak.json")


def run(args) -> int:
    import ecf_engine
    from ecf_engine.train import image_files
    from .rd import shipped_models
    set_threads(args.threads)
    if args.images < 1:
        raise SystemExit("--images must be >= 1")
    paths = image_files(args.folder)[:args.images]
    if not paths:
        raise SystemExit(f"no images in {args.folder}")
    last = VERSIONS[-1]
    rows = []
    for name in args.models or shipped_models():
        engine = ecf_engine.load(name)
        t = time.perf_counter()
        measure(engine, rgb_image(paths[0]))                   # warm-up (builds, caches)
        warmup_ms = 1000 * (time.perf_counter() - t)
        per = [measure(engine, rgb_image(p)) for p in tqdm(paths, desc=name)]
        row = {"model": name, "images": len(per), "warmup_ms": warmup_ms}
        for key in per[0]:
            row[key] = float(np.mean([r[key] for r in per]))
        row["fixed_point_cost_percent"] = 100 * (row["y_bits_fixed_point_model"] / row["y_bits_float_model"] - 1)
        row["integer_tables_cost_percent"] = 100 * (row["y_bits_integer_tables"] / row["y_bits_fixed_point_model"] - 1)
        for v in VERSIONS:
            row[f"coder_cost_percent_v{v}"] = 100 * (8 * row[f"y_bytes_v{v}"] / row["y_bits_integer_tables"] - 1)
        row[f"worst_image_v{last}_vs_float_model_percent"] = max(
            100 * (8 * r[f"y_bytes_v{last}"] / r["y_bits_float_model"] - 1) for r in per)
        rows.append(row)
    print(f"\n{len(paths)} images of {args.folder}; means per image; y sizes relative to the previous column")
    head = " | ".join(f"bpp v{v}" for v in VERSIONS)
    print(f"| model | {head} | fixed point vs float | integer tables | "
          + " | ".join(f"rANS v{v}" for v in VERSIONS) + " | quantized params ≠ float | y decode ms (coding) |")
    print("|---" * (5 + 2 * len(VERSIONS)) + "|")
    for r in rows:
        ms = " / ".join(f"{r[f'y_decode_ms_v{v}']:.0f} ({r[f'y_coding_ms_v{v}']:.0f})" for v in VERSIONS)
        print(f"| {r['model']} | " + " | ".join(f"{r[f'bpp_v{v}']:.4f}" for v in VERSIONS)
              + f" | {r['fixed_point_cost_percent']:+.3f} % | {r['integer_tables_cost_percent']:+.3f} % | "
              + " | ".join(f"{r[f'coder_cost_percent_v{v}']:+.3f} %" for v in VERSIONS)
              + f" | {100 * r['params_differing']:.2f} % | {ms} |")
    write_result(args.out, {"threads": torch.get_num_threads(), "versions": list(VERSIONS), "rows": rows})
    return 0
