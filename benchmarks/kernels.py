"""The accelerated ops and the entropy coder, each against its reference; one part per run.

    python -m benchmarks kernels [ops] [--repeat 20] [--device cpu|cuda] [--dtype float32]
    python -m benchmarks kernels rans [--symbols 2000000] [--bands 8] [--thread-counts 1 2]
    python -m benchmarks kernels mismatch [IMAGE ...] [--model default] [--crop 64]
    python -m benchmarks kernels resources

ops        each op through its dispatch (egr.py, attention.py) with the backend forced by
           ECF_BACKEND (ops.py), at the latent
           sizes of Kodak, 1080p and 4K images and the `paper` preset's shapes (M=192,
           N_cs=4, K=8, d_e=384, 12 heads): egr / egr_inverse, torch reference vs the C++
           (CPU) or CUDA extension; window_attention (one W-SCA layer over all 7 input slabs)
           and cached_attention (steps 0..6 of one decode against the KV cache), SDPA
           reference vs Triton: CUDA only, on a CPU the kernels exist only in Triton's
           interpreter, whose speed means nothing. --warmup untimed calls, then the median
           and spread of --repeat calls, device synchronized; a row states the backend
           that actually ran (ops.last_run). -> kernels-<device>.json
rans       the y coder (csrc/rans.c): symbols per second by thread count, tables included,
           for random GMM parameters shaped like a trained model's. -> rans-throughput.json
mismatch   how many quantized entropy parameters change when the attention runs in the
           Triton kernels (teacher-forced coding schedule, ECF_BACKEND torch vs triton): a
           parameter within ~1e-6 of a rounding boundary rounds differently on the other
           path. On a CPU the kernels run interpreted (slow: a 768x512 image takes
           minutes). -> kernel-mismatch-<device>.json
resources  registers and spill bytes per thread of every Triton kernel compiled for an
           H100 (sm_90a) by triton's compiler and ptxas -v; no GPU needed.
           -> kernel-resources-sm90.json
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import harness
from .harness import RESULTS, SAMPLE, backend, machine_info, machine_text, repeat, rgb_image, set_threads, \
    write_result

SIZES = {"kodak": (768, 512), "1080p": (1920, 1080), "4k": (3840, 2160)}
PARTS = ("ops", "rans", "mismatch", "resources")


def latent_hw(width: int, height: int) -> tuple[int, int]:
    return -(-height // 64) * 4, -(-width // 64) * 4        # padded to 64, then /16


# --- ops: each op under each backend -------------------------------------------------------

def forced(op: str, fn, device, name: str, args) -> tuple[dict, str]:
    """Time fn under ECF_BACKEND=name; (timings, backend that ran, from ops.last_run)."""
    from ecf_engine import ops
    with backend(name), torch.no_grad():
        fn()
        ran = ops.last_run().get((op, device.type), ("?", ""))[0]
        return repeat(fn, device, args.warmup, args.repeat), ran


def egr_rows(cfg, H, W, device, dtype, args):
    from ecf_engine.egr import egr, egr_inverse
    y = torch.randn(1, cfg.M, H, W, device=device, dtype=dtype)
    with backend("torch"):
        slabs = egr(y, cfg.N_cs)
    fast = "cuda" if device.type == "cuda" else "cpp"
    with backend(fast):
        if not (torch.equal(egr(y, cfg.N_cs), slabs) and torch.equal(egr_inverse(slabs, cfg.N_cs), y)):
            raise SystemExit("the EGR extension disagrees with the reference")
    for op, fn in (("egr", lambda: egr(y, cfg.N_cs)), ("egr_inverse", lambda: egr_inverse(slabs, cfg.N_cs))):
        for name in ("torch", fast):
            t, ran = forced(op, fn, device, name, args)
            if ran != name:
                print(f"  skip {op} {name}: ran {ran} instead (see ecf_engine.backend_report())")
                continue
            yield op, name, f"({cfg.M}, {H}, {W})", t


def attention_rows(cfg, H, W, device, dtype, args):
    if device.type != "cuda":
        print("  skip the attention rows: the Triton kernels run compiled on CUDA only "
              "(on a CPU only in Triton's interpreter, not meaningful for speed)")
        return
    from ecf_engine.attention import cached_attention, window_attention
    from ecf_engine.contextformer import LayerCache, SCABlock
    torch.manual_seed(0)
    S, heads = cfg.groups - 1, cfg.heads
    blk = SCABlock(cfg, False, S).to(device, dtype)
    grid, bias = blk.grid(H, W // 2), blk.bias()
    qkv = torch.randn(1, S, H, W // 2, 3 * cfg.d_e, device=device, dtype=dtype)
    shape = f"({S}, {H}, {W // 2}, {cfg.d_e}) {heads}h"
    cache = LayerCache(1, grid, cfg, dtype, device)
    steps = [qkv[:, s:s + 1] for s in range(S)]

    def window():
        return window_attention(qkv, heads, grid, bias, blk.bias_spatial, blk.bias_slab)

    def decode():
        for s, x in enumerate(steps):
            cached_attention(x, heads, s, grid, bias, blk.bias_spatial, blk.bias_slab, cache)

    for op, label, fn in (("window_attention", "window_attention", window),
                          ("cached_attention", f"cached_attention x{S} steps", decode)):
        for name in ("torch", "triton"):
            t, ran = forced(op, fn, device, name, args)
            if ran != name:
                print(f"  skip {op} {name}: ran {ran} instead (see ecf_engine.backend_report())")
                continue
            yield label, name, shape, t


def run_ops(args) -> int:
    from ecf_engine.config import Config
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cfg = Config.from_name("paper")
    print(f"{machine_text(machine_info(device))}; {args.dtype}; median of {args.repeat} after {args.warmup} warm-up calls")
    rows = []
    for size in args.sizes:
        H, W = latent_hw(*SIZES[size])
        print(f"{size}: latent {H}x{W}")
        for gen in (egr_rows, attention_rows):
            for op, impl, shape, t in gen(cfg, H, W, device, dtype, args):
                rows.append({"size": size, "latent": [H, W], "op": op, "impl": impl, "shape": shape,
                             "device": device.type, "dtype": args.dtype, "median_ms": t["median"], "min_ms": t["min"],
                             "max_ms": t["max"], "iqr_ms": t["iqr"], "repeat": t["n"], "warmup": t["warmup"],
                             "warmup_ms": t["warmup_ms"]})
    print(f"\n{'size':<7}{'op':<30}{'impl':<9}{'median ms':>11}{'IQR ms':>9}{'min':>9}{'max':>9}{'vs torch':>10}")
    for r in rows:
        base = next((b for b in rows if b["size"] == r["size"] and b["op"] == r["op"] and b["impl"] == "torch"), r)
        print(f"{r['size']:<7}{r['op']:<30}{r['impl']:<9}{r['median_ms']:>11.3f}{r['iqr_ms']:>9.3f}"
              f"{r['min_ms']:>9.3f}{r['max_ms']:>9.3f}{base['median_ms'] / r['median_ms']:>9.2f}x")
    write_result(args.out or RESULTS / f"kernels-{device.type}.json",
                 {"device": device.type, "dtype": args.dtype, "config": "paper", "rows": rows}, device)
    return 0


# --- rans: the y coder's throughput --------------------------------------------------------

def run_rans(args) -> int:
    from ecf_engine import rans
    from ecf_engine.entropy import quantize_fixed
    if rans._lib() is None:
        raise SystemExit("the C rANS library is not available (no C compiler?)")
    if args.symbols < args.bands or args.bands < 1:
        raise SystemExit("--symbols must be >= --bands >= 1")
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

    def timed(fn) -> tuple[float, float]:
        t = time.perf_counter()
        fn()
        warm = time.perf_counter() - t
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), warm

    rows = []
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        data = encode()

        def decode():
            dec = rans.SubstreamDecoder(data, args.bands)
            if not torch.equal(dec.decode_group(q, offsets), values):
                raise SystemExit("rANS decoded other symbols than it coded")
            dec.check_finished()
        (t_dec, w_dec), (t_enc, w_enc) = timed(decode), timed(encode)
        rows.append({"threads": threads, "decode_msym_per_s": n / t_dec / 1e6, "encode_msym_per_s": n / t_enc / 1e6,
                     "bits_per_symbol": 8 * len(data) / n, "warmup_decode_ms": 1000 * w_dec,
                     "warmup_encode_ms": 1000 * w_enc})
        print(f"{threads} thread(s): decode {rows[-1]['decode_msym_per_s']:.1f} M symbols/s, "
              f"encode {rows[-1]['encode_msym_per_s']:.1f} M symbols/s ({rows[-1]['bits_per_symbol']:.2f} bits/symbol, "
              f"{args.bands} substreams, tables included; medians of {args.repeat} after one warm-up)")
    write_result(args.out or RESULTS / "rans-throughput.json",
                 {"symbols": n, "bands": args.bands, "repeat": args.repeat, "rows": rows})
    return 0


# --- mismatch: quantized parameters that change with the kernels ---------------------------

def quantized_params(engine, rgb, name: str, device) -> tuple[list, list]:
    """Integer GMM parameters of every group, and the raw floats, with ECF_BACKEND=name."""
    from ecf_engine import schedule
    from ecf_engine.detmath import thread_invariant_kernels
    from ecf_engine.engine import to_input
    from ecf_engine.entropy import quantize_gmm
    m = engine.model
    with backend(name), torch.no_grad(), thread_invariant_kernels():
        y_hat = torch.round(m.g_a(to_input(rgb).to(device)))
        psi = m.h_s(torch.round(m.h_a(y_hat)))
        raws = [raw.float().reshape(-1, 3, engine.cfg.k_m)
                for raw in schedule.teacher_forced(m.context_model, psi, y_hat)]
    return [quantize_gmm(raw) for raw in raws], raws


def run_mismatch(args) -> int:
    import ecf_engine
    from ecf_engine import ops
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        # triton reads TRITON_INTERPRET when the kernels are defined: run again with it set
        return subprocess.call([sys.executable, "-m", "benchmarks", *harness.ARGV],
                               env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=harness.ROOT)
    engine = ecf_engine.load(args.model, device=device)
    rows = []
    for path in args.images or [SAMPLE]:
        rgb = rgb_image(path)
        rgb = rgb[:args.crop, :args.crop].copy() if args.crop else rgb
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
            diff = [int((x != z).sum()) for x, z in zip(a, b)]        # logits, means, log-scales
            per_group.append({"group": g, "logits": diff[0], "means": diff[1], "log_scales": diff[2]})
            total += sum(diff)
            params += sum(x.numel() for x in a)
        r = {"image": Path(path).name, "size": list(rgb.shape[:2]), "quantized_params": params, "differing": total,
             "fraction": total / params,
             "max_abs_raw_diff": max((x - z).abs().max().item() for x, z in zip(ref_raws, k_raws)),
             "per_group": per_group, "seconds": {"torch": t_ref, "triton": t_kernel}}
        rows.append(r)
        print(f"{r['image']} {r['size'][1]}x{r['size'][0]}: {total} of {params} quantized parameters differ "
              f"({100 * r['fraction']:.4f} %), max |raw diff| {r['max_abs_raw_diff']:.2e}; "
              f"torch {t_ref:.1f} s, triton {t_kernel:.1f} s (the first call of each includes compiling)")
    write_result(args.out or RESULTS / f"kernel-mismatch-{device.type}.json",
                 {"model": args.model, "crop": args.crop, "interpreted": device.type == "cpu", "rows": rows}, device)
    return 0


# --- resources: registers and spills of the compiled kernels -------------------------------

def ptxas_binary() -> str:
    """The newest ptxas triton ships (its PTX version can be newer than the CUDA toolkit's)."""
    import triton
    folder = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (folder / name).is_file():
            return str(folder / name)
    raise SystemExit(f"no ptxas in {folder}")


def kernel_resources(kernel) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        done = subprocess.run([ptxas_binary(), "-arch=sm_90a", "-v", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True, check=True)
    number = lambda pattern: int(re.search(pattern, done.stderr).group(1))  # noqa: E731
    return {"registers": number(r"Used (\d+) registers"), "spill_store_bytes": number(r"(\d+) bytes spill stores"),
            "spill_load_bytes": number(r"(\d+) bytes spill loads")}


def run_resources(args) -> int:
    if os.environ.get("TRITON_INTERPRET"):
        # the kernels must be defined for the compiler, not the interpreter: run again without it
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "benchmarks", *harness.ARGV], env=env, cwd=harness.ROOT)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ecf_engine.kernels.cached_attention import _cached_attention_fwd
    from ecf_engine.kernels.fixed_attention import _fixed_step_fwd
    from ecf_engine.kernels.window_attention import _window_attention_fwd, block_sizes, dot_precision
    target = GPUTarget("cuda", 90, 32)
    types = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

    def float_kernel(fn, dtype, K: int, head_dim: int):
        T = K * K // 2
        block_t, block_d = block_sizes(T, head_dim)
        consts = dict(T=T, K=K, HEAD_DIM=head_dim, BLOCK_T=block_t, BLOCK_D=block_d, PRECISION=dot_precision(dtype))

        def arg_type(name: str) -> str:
            if name in consts:
                return "constexpr"
            if name in ("spatial_ptr", "slab_ptr"):            # bias tables: fp32 parameters
                return "*fp32"
            if name.endswith("_ptr"):
                return "*" + types[dtype]
            return "fp32" if name == "scale" else "i32"
        return triton.compile(ASTSource(fn, {n: arg_type(n) for n in fn.arg_names}, consts), target=target)

    def fixed_kernel(K: int, head_dim: int):
        T = K * K // 2
        consts = dict(T=T, HEAD_DIM=head_dim, BLOCK_T=triton.next_power_of_2(T),
                      BLOCK_D=triton.next_power_of_2(head_dim), FRAC=12)
        extra = {"valid_ptr": "*i8", "exp_last": "fp32"}
        sig = {n: "constexpr" if n in consts else extra.get(n, "*fp64" if n.endswith("_ptr") else "i32")
               for n in _fixed_step_fwd.arg_names}
        return triton.compile(ASTSource(_fixed_step_fwd, sig, consts), target=target)

    rows = []
    shapes = [(8, 24), (8, 32)]                          # (K, head dim): shipped small, paper
    for name, fn in (("window_attention", _window_attention_fwd), ("cached_attention", _cached_attention_fwd)):
        for dtype in types:
            for K, dh in shapes:
                rows.append({"kernel": name, "dtype": types[dtype], "K": K, "head_dim": dh,
                             **kernel_resources(float_kernel(fn, dtype, K, dh))})
    for K, dh in shapes:
        rows.append({"kernel": "fixed_attention", "dtype": "fp64 integers", "K": K, "head_dim": dh,
                     **kernel_resources(fixed_kernel(K, dh))})
    print(f"compiled for sm_90a with triton {triton.__version__}, ptxas -v ({Path(ptxas_binary()).name})")
    print(f"{'kernel':<18}{'dtype':<15}{'K':>3}{'head dim':>10}{'registers':>11}{'spill st/ld B':>15}")
    for r in rows:
        print(f"{r['kernel']:<18}{r['dtype']:<15}{r['K']:>3}{r['head_dim']:>10}{r['registers']:>11}"
              f"{str(r['spill_store_bytes']) + '/' + str(r['spill_load_bytes']):>15}")
    write_result(args.out or RESULTS / "kernel-resources-sm90.json",
                 {"target": "sm_90a", "triton": triton.__version__,
                  "note": "compiled, not run: registers and spill bytes per thread from ptxas -v", "rows": rows})
    return 0


# --- command line --------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("part", nargs="?", default="ops", choices=PARTS, help="what to measure (default: ops)")
    p.add_argument("images", nargs="*", type=Path, help="mismatch: images (default: the package's sample)")
    p.add_argument("--repeat", type=int, default=20, help="timed calls per row (ops) / runs (rans)")
    p.add_argument("--warmup", type=int, default=3, help="ops: untimed calls first")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--symbols", type=int, default=2_000_000, help="rans: symbols per run")
    p.add_argument("--bands", type=int, default=8, help="rans: substreams")
    p.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2], help="rans: thread counts to time")
    p.add_argument("--model", default="default", help="mismatch: model")
    p.add_argument("--crop", type=int, help="mismatch: top-left crop (pixels per side)")
    p.add_argument("--out", type=Path, help="output JSON (default: benchmarks/results/<part's file>)")


def run(args) -> int:
    if args.images and args.part != "mismatch":
        raise SystemExit(f"image arguments are for `kernels mismatch`, not `kernels {args.part}`")
    if args.repeat < 1 or args.warmup < 0:
        raise SystemExit("--repeat must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here")
    set_threads(args.threads)
    return {"ops": run_ops, "rans": run_rans, "mismatch": run_mismatch, "resources": run_resources}[args.part](args)
