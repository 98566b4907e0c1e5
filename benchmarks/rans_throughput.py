"""Throughput of the format-4 y coder (csrc/rans.c): symbols per second by thread count.

    python benchmarks/rans_throughput.py [--symbols 2000000] [--bands 8] [--threads 1 2]

Random GMM parameters and values shaped like a trained model's (see tests/test_rans.py),
split into --bands substreams; times table construction + rANS decoding of one group
(the C loop over the bands runs on --threads OpenMP threads), and encoding, each the
median of --repeat runs after one warm-up. Writes benchmarks/results/rans-throughput.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ecf_engine import rans
from ecf_engine.entropy import quantize_fixed
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=2_000_000)
    ap.add_argument("--bands", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rans-throughput.json")
    args = ap.parse_args(argv)
    if rans._lib() is None:
        raise SystemExit("the C library is not available (no C compiler?)")
    g = torch.Generator().manual_seed(0)
    n = args.symbols
    raw = torch.randn(n, 3, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 20.0, 1.5]).view(1, 3, 1)
    raw[:, 1] = raw[:, 1, :1] + 0.3 * raw[:, 1, 1:2] / 20     # components near one mean
    raw[:, 2] -= 1.0                                  # scales around 0.3 .. 2: typical latents
    q = quantize_fixed(torch.round(raw * 4096).long(), 12)
    mu = q[1].double().mean(-1) / 32
    values = torch.round(mu + torch.randn(n, generator=g, dtype=torch.float64)).long()
    offsets = rans.band_offsets(n, 1, args.bands)

    def encode():
        enc = rans.SubstreamEncoder(args.bands)
        for s in range(args.bands):
            a, b = offsets[s], offsets[s + 1]
            enc.add(s, tuple(t[a:b] for t in q), values[a:b])
        return enc.finish()

    def timed(fn):
        fn()
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        data = encode()

        def decode():
            dec = rans.SubstreamDecoder(data, args.bands)
            assert torch.equal(dec.decode_group(q, offsets), values)
            dec.check_finished()
        t_dec, t_enc = timed(decode), timed(encode)
        rows.append({"threads": threads, "decode_msym_per_s": n / t_dec / 1e6, "encode_msym_per_s": n / t_enc / 1e6,
                     "bits_per_symbol": 8 * len(data) / n})
        print(f"{threads} thread(s): decode {rows[-1]['decode_msym_per_s']:.1f} M symbols/s, "
              f"encode {rows[-1]['encode_msym_per_s']:.1f} M symbols/s ({rows[-1]['bits_per_symbol']:.2f} bits/symbol, "
              f"{args.bands} substreams, tables included)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "symbols": n, "bands": args.bands, "rows": rows}, indent=2))
    print(f"wrote {args.out} ({machine()})")


if __name__ == "__main__":
    main()
