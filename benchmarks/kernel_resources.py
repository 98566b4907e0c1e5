"""Registers and spills of the Triton kernels compiled for an H100 (sm_90a), no GPU needed.

    python benchmarks/kernel_resources.py [--out benchmarks/results/kernel-resources-sm90.json]

Compiles each kernel at the shipped model's (K=8, head dim 24) and the paper preset's
(K=8, head dim 32) shapes with triton's own compiler and asks ptxas (`-v`, the binary triton
ships) for the register count and spill bytes per thread. Spills to local memory are what
makes a kernel slow without anyone noticing on the CPU, where the kernels only run in the
interpreter. Prints a table and writes JSON. Needs triton with its NVIDIA backend; run it
without TRITON_INTERPRET (the script clears it for itself).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)                # must happen before the kernels are imported
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ecf_engine.evaluate import machine  # noqa: E402
from ecf_engine.kernels.cached_attention import _cached_attention_fwd  # noqa: E402
from ecf_engine.kernels.fixed_attention import _fixed_step_fwd  # noqa: E402
from ecf_engine.kernels.window_attention import _window_attention_fwd, block_sizes, dot_precision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = GPUTarget("cuda", 90, 32)
TYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


def ptxas_binary() -> str:
    """The newest ptxas triton ships (its PTX version can be newer than the CUDA toolkit's)."""
    folder = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (folder / name).is_file():
            return str(folder / name)
    raise FileNotFoundError(f"no ptxas in {folder}")


def resources(kernel) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        done = subprocess.run([ptxas_binary(), "-arch=sm_90a", "-v", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True, check=True)
    number = lambda pattern: int(re.search(pattern, done.stderr).group(1))  # noqa: E731
    return {"registers": number(r"Used (\d+) registers"), "spill_store_bytes": number(r"(\d+) bytes spill stores"),
            "spill_load_bytes": number(r"(\d+) bytes spill loads")}


def float_kernel(fn, dtype: torch.dtype, K: int, head_dim: int):
    T = K * K // 2
    block_t, block_d = block_sizes(T, head_dim)
    consts = dict(T=T, K=K, HEAD_DIM=head_dim, BLOCK_T=block_t, BLOCK_D=block_d, PRECISION=dot_precision(dtype))

    def arg_type(name: str) -> str:
        if name in consts:
            return "constexpr"
        if name in ("spatial_ptr", "slab_ptr"):            # bias tables: fp32 parameters
            return "*fp32"
        if name.endswith("_ptr"):
            return "*" + TYPE[dtype]
        return "fp32" if name == "scale" else "i32"

    sig = {name: arg_type(name) for name in fn.arg_names}
    return triton.compile(ASTSource(fn, sig, consts), target=TARGET)


def fixed_kernel(K: int, head_dim: int):
    T = K * K // 2
    consts = dict(T=T, HEAD_DIM=head_dim, BLOCK_T=triton.next_power_of_2(T),
                  BLOCK_D=triton.next_power_of_2(head_dim), FRAC=12)
    types = {"valid_ptr": "*i8", "exp_last": "fp32"}
    sig = {n: "constexpr" if n in consts else types.get(n, "*fp64" if n.endswith("_ptr") else "i32")
           for n in _fixed_step_fwd.arg_names}
    return triton.compile(ASTSource(_fixed_step_fwd, sig, consts), target=TARGET)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kernel-resources-sm90.json")
    args = p.parse_args()
    rows = []
    shapes = [(8, 24), (8, 32)]                          # (K, head dim): shipped small, paper
    for name, fn in (("window_attention", _window_attention_fwd), ("cached_attention", _cached_attention_fwd)):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for K, dh in shapes:
                rows.append({"kernel": name, "dtype": TYPE[dtype], "K": K, "head_dim": dh,
                             **resources(float_kernel(fn, dtype, K, dh))})
    for K, dh in shapes:
        rows.append({"kernel": "fixed_attention", "dtype": "fp64 integers", "K": K, "head_dim": dh,
                     **resources(fixed_kernel(K, dh))})
    print(f"compiled for sm_90a with triton {triton.__version__}, ptxas -v ({Path(ptxas_binary()).name})")
    print(f"{'kernel':<18}{'dtype':<15}{'K':>3}{'head dim':>10}{'registers':>11}{'spill st/ld B':>15}")
    for r in rows:
        print(f"{r['kernel']:<18}{r['dtype']:<15}{r['K']:>3}{r['head_dim']:>10}{r['registers']:>11}"
              f"{str(r['spill_store_bytes']) + '/' + str(r['spill_load_bytes']):>15}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "target": "sm_90a", "triton": triton.__version__,
                                    "note": "compiled, not run: registers and spill bytes per thread from ptxas -v",
                                    "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
