"""What the model costs: kMAC per pixel per component (encoder and decoder), or, with
--ladder, the paper's optimization ladder of the context model counted and timed rung by rung.

    python -m benchmarks complexity [--size 768x512] [--models paper default]
    python -m benchmarks complexity --ladder [--models paper default] [--repeat 5] [--device cpu|cuda]

MACs are counted with torch's FlopCounterMode (MAC = FLOP / 2) on the real code paths
(g_a, h_a, h_s, g_s, and the context model run through the actual coding schedule).
Attention is counted too: our window attention runs through SDPA's math path (5-D inputs
with a float mask), which decomposes into counted bmm calls; this is checked against an
analytic count (`analytic_attention`), and the paper's C_attn formula (DESIGN.md section 1)
is printed for comparison. g_a and g_s are counted on whole maps (the architecture); what
they execute on overlapping tiles, halos included, is reported beside
(`as_run_with_tiles_kmac_per_px`). Writes benchmarks/results/complexity.json.

--ladder derives the GMM parameters of all 2*N_cs groups of a Kodak-sized latent (768x512
-> 48x32), in kMAC/px and ms (median of --repeat runs after one warm-up, reported apart;
device synchronized; entropy coding excluded, as in the paper):

  (a) no optimizations: 2*N_cs steps, each a full masked pass over the tokens of all
      groups (a zero start slab + groups 0..G-2), as a coder without EGR must do: the
      groups are interleaved in the latent, so every step touches every token
  (b) + EGR: groups are contiguous slabs, so step t runs only over slabs 0..t
  (c) + skip-first-group: group 0 from the hyperprior alone, 2*N_cs-1 steps
      (the engine's `cached=False` schedule)
  (d) + KV cache: each step embeds and attends only the new slab (the engine's default)
  (e) + Triton kernels: rung (d) with the fused window / cached attention kernels
      (ECF_BACKEND=auto on CUDA); (a)-(d) run the PyTorch references (ECF_BACKEND=torch).
      CUDA only: on the CPU the kernels exist only in Triton's interpreter.
  (f) fixed point: rung (d) on the fixed-point copy of the networks that the coder runs
      (fixedpoint.py; C loops on the CPU, the exact Triton step kernel on CUDA): the cost
      of exact, device-independent entropy parameters

(a) and (b) use a variant of the context model with one more input slab (the start slab)
and random weights: the ladder measures cost, not compression.
Writes benchmarks/results/ladder-<device>.json.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ecf_engine import schedule
from ecf_engine.contextformer import ContextModel, WindowGrid
from ecf_engine.egr import egr
from ecf_engine.engine import to_input

from .harness import KODAK, RESULTS, SAMPLE, backend, parse_size, repeat, rgb_image, set_threads, write_result

WIDTH, HEIGHT = 768, 512        # the ladder's image: Kodak's size


# --- kMAC per pixel per component ---------------------------------------------------------

def macs(fn, *args) -> tuple[float, object]:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        out = fn(*args)
    return fc.get_total_flops() / 2, out


def entropy_param_macs(model, tokens: int) -> float:
    """g_e is a stack of Linear layers applied to every (position, group) token."""
    return tokens * sum(l.in_features * l.out_features for l in model.context_model.entropy_params
                        if isinstance(l, torch.nn.Linear))


def analytic_attention(cfg, H: int, W: int, cached: bool) -> float:
    """MACs of QK^T and AV in our window attention (projections are Linear layers, counted
    separately), over all layers and all coding steps, padded windows included."""
    S, d = cfg.groups - 1, cfg.d_e
    total = 0.0
    for layer in range(cfg.L):
        grid = WindowGrid(H, W // 2, cfg.K, shifted=layer % 2 == 1)
        T = grid.T
        if cached:       # step k: T queries against (k+1)T cached keys
            pairs = sum(T * (k + 1) * T for k in range(S))
        else:            # uncached: step k recomputes all (k+1)T queries against (k+1)T keys
            pairs = sum(((k + 1) * T) ** 2 for k in range(S))
        total += grid.n_windows * pairs * 2 * d
    return total


def paper_c_attn(cfg, H: int, W: int) -> float:
    """The paper's C_attn = N_win (2 N^2 d_e + 4 N d_e^2), N = K^2 N_cs, non-overlapping
    windows (N_win = h w / K^2 on the latent), summed over L layers (single pass)."""
    N = cfg.K ** 2 * cfg.N_cs
    n_win = (H * W) / cfg.K ** 2
    return cfg.L * n_win * (2 * N ** 2 * cfg.d_e + 4 * N * cfg.d_e ** 2)


def measure(name: str, width: int, height: int) -> dict:
    import ecf_engine
    engine = ecf_engine.load(name)
    m, cfg = engine.model, engine.cfg
    pixels = width * height
    x = torch.rand(1, 3, height, width)
    g_a_run, y = macs(m.g_a, x)                  # as run: tiles with their halos (transforms.py)
    g_s_run, _ = macs(m.g_s, torch.round(y))
    m.g_a.tile = m.g_s.tile = None               # the architecture's count, whole maps
    g_a, y = macs(m.g_a, x)
    h_a, z = macs(m.h_a, y)
    h_s, psi = macs(m.h_s, torch.round(z))
    g_s, _ = macs(m.g_s, torch.round(y))
    _, _, H, W = y.shape
    slabs = egr(torch.round(y), cfg.N_cs)
    ctx = {}
    for mode in ("cached", "uncached"):
        ctx[mode], _ = macs(schedule.run, m.context_model, psi, lambda g, raw: slabs[:, g], mode == "cached")
    single, _ = macs(m.context_model.raw_params, torch.round(y), psi)      # one masked pass: the paper's measure
    g_e = entropy_param_macs(m, cfg.groups * H * (W // 2))
    kmac = lambda v: v / pixels / 1000
    row = {
        "model": name, "config": json.loads(cfg.to_json()), "image": f"{width}x{height}", "latent": f"{W}x{H}",
        "kmac_per_px": {
            "g_a": kmac(g_a), "h_a": kmac(h_a), "h_s": kmac(h_s), "g_s": kmac(g_s),
            "context_model_cached": kmac(ctx["cached"] - g_e), "context_model_uncached": kmac(ctx["uncached"] - g_e),
            "context_model_single_pass": kmac(single - g_e), "entropy_parameters_g_e": kmac(g_e),
        },
        "attention_qk_av_kmac_per_px": {
            "analytic_cached": kmac(analytic_attention(cfg, H, W, True)),
            "analytic_uncached": kmac(analytic_attention(cfg, H, W, False)),
            "paper_c_attn_formula_single_pass_incl_projections": kmac(paper_c_attn(cfg, H, W)),
        },
        "as_run_with_tiles_kmac_per_px": {"g_a": kmac(g_a_run), "g_s": kmac(g_s_run)},
    }
    k = row["kmac_per_px"]
    k["encoder_total"] = k["g_a"] + k["h_a"] + k["h_s"] + k["context_model_cached"] + k["entropy_parameters_g_e"]
    k["decoder_total"] = k["h_s"] + k["context_model_cached"] + k["entropy_parameters_g_e"] + k["g_s"]
    return row


def counted_attention_matches_analytic(name: str = "tiny") -> dict:
    """Cross-check: FlopCounterMode's count of the context model minus its Linear layers
    equals the analytic QK^T + AV count."""
    import ecf_engine
    engine = ecf_engine.load(name)
    m, cfg = engine.model, engine.cfg
    H, W = 12, 20
    y = torch.round(torch.randn(1, cfg.M, H, W) * 3)
    psi = torch.randn(1, 2 * cfg.M, H, W)
    slabs = egr(y, cfg.N_cs)
    total, _ = macs(schedule.run, m.context_model, psi, lambda g, raw: slabs[:, g], True)
    S = cfg.groups - 1
    linear = 0.0
    for blk in m.context_model.blocks:
        per_token = sum(l.in_features * l.out_features for l in blk.modules() if isinstance(l, torch.nn.Linear))
        linear += per_token * S * H * (W // 2)
    linear += (m.context_model.embed.in_features * m.context_model.embed.out_features) * S * H * (W // 2)
    linear += entropy_param_macs(m, cfg.groups * H * (W // 2))
    return {"counted_attention": total - linear, "analytic_attention": analytic_attention(cfg, H, W, True)}



# --- the optimization ladder ---------------------------------------------------------------

def kodak_latent(engine, device):
    from PIL import Image
    src = KODAK / "kodim23.png"
    rgb = rgb_image(src if src.exists() else SAMPLE)
    rgb = np.asarray(Image.fromarray(rgb).resize((WIDTH, HEIGHT)))
    m = engine.model
    with torch.no_grad():
        y = torch.round(m.g_a(to_input(rgb.copy()).to(device)))
        z = torch.round(m.h_a(y))
        psi, psi_fixed = m.h_s(z), engine.hyper(z)
    return y, psi, psi_fixed


def rungs(engine, y, psi, psi_fixed):
    cfg = engine.cfg
    G = cfg.groups
    main = engine.model.context_model
    torch.manual_seed(0)
    start_token = ContextModel(cfg, n_slabs=G).eval().to(y.device)   # one extra input slab: the start slab
    slabs = egr(y, cfg.N_cs)
    with_start = torch.cat([torch.zeros_like(slabs[:, :1]), slabs[:, :-1]], 1)    # (B, G, H, W2, p)
    psi_slabs = start_token.hyper_slabs(psi)
    H, W2 = slabs.shape[2:4]
    grids, biases = start_token.grids(H, W2), start_token.biases()

    def no_egr():
        for t in range(G):
            ctx = start_token.context(with_start, grids, biases)[:, t]
            start_token.params(ctx, psi_slabs[:, t % 2])

    def egr_only():
        for t in range(G):
            ctx = start_token.context(with_start[:, :t + 1], grids, biases)[:, t]
            start_token.params(ctx, psi_slabs[:, t % 2])

    def run(cached):
        return lambda: schedule.run(main, psi, lambda g, raw: slabs[:, g], cached=cached)

    torch_only = {
        "(a) 2*N_cs steps, full recomputation, no EGR": no_egr,
        "(b) + EGR": egr_only,
        "(c) + skip-first-group (2*N_cs-1 steps)": run(False),
        "(d) + KV cache": run(True),
    }
    out = {label: (fn, "torch") for label, fn in torch_only.items()}
    if y.is_cuda:
        out["(e) + Triton kernels"] = (run(True), "auto")
    fixed, int_slabs = main.fixed_point(), slabs.long()
    out["(f) fixed point (format-3 coding)"] = (
        lambda: schedule.run(fixed, psi_fixed, lambda g, raw: int_slabs[:, g]), "auto")
    return out


def measure_rung(fn, times: int, device) -> dict:
    """kMAC/px (counted once; a Triton kernel is opaque to FlopCounterMode, so rung (e)
    reports (d)'s count) and synchronized wall times, warm-up separate."""
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            fn()
        t = repeat(fn, device, warmup=1, times=times)
    return {"kmac_per_px": fc.get_total_flops() / 2 / (WIDTH * HEIGHT) / 1000, "warmup_ms": t["warmup_ms"],
            "ms": {k: t[k] for k in ("median", "min", "max", "iqr", "n")}}


def ladder(name: str, times: int, device) -> dict:
    import ecf_engine
    engine = ecf_engine.load(name, device=device)
    y, psi, psi_fixed = kodak_latent(engine, device)
    rows = {}
    for label, (fn, choice) in rungs(engine, y, psi, psi_fixed).items():
        with backend(choice):
            rows[label] = measure_rung(fn, times, device)
    if "(e) + Triton kernels" in rows:
        rows["(e) + Triton kernels"]["kmac_per_px"] = rows["(d) + KV cache"]["kmac_per_px"]
    base = next(iter(rows.values()))
    for r in rows.values():
        r["complexity_vs_a"] = r["kmac_per_px"] / base["kmac_per_px"]
        r["speedup_vs_a"] = base["ms"]["median"] / r["ms"]["median"]
    return {"model": name, "rows": rows}


# --- command line --------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("--models", nargs="+", default=["paper", "default"], help="shipped names, paths or presets")
    p.add_argument("--size", default="768x512", help="image size of the kMAC count (not --ladder)")
    p.add_argument("--ladder", action="store_true", help="the optimization ladder, counted and timed (ladder-<device>.json)")
    p.add_argument("--repeat", type=int, default=5, help="--ladder: timed runs per rung")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="--ladder: device")
    p.add_argument("--out", type=Path, help="output JSON (default benchmarks/results/complexity.json / ladder-<device>.json)")


def run(args) -> int:
    set_threads(args.threads)
    return run_ladder(args) if args.ladder else run_count(args)


def run_count(args) -> int:
    width, height = parse_size(args.size)
    rows = [measure(name, width, height) for name in args.models]
    check = counted_attention_matches_analytic()
    names = list(rows[0]["kmac_per_px"])
    print(f"kMAC/px at {args.size}")
    print(f"{'component':<30}" + "".join(f"{r['model']:>14}" for r in rows))
    for n in names:
        print(f"{n:<30}" + "".join(f"{r['kmac_per_px'][n]:>14.2f}" for r in rows))
    for n in rows[0]["attention_qk_av_kmac_per_px"]:
        print(f"{'attn ' + n:<30}" + "".join(f"{r['attention_qk_av_kmac_per_px'][n]:>14.2f}" for r in rows))
    for n in rows[0]["as_run_with_tiles_kmac_per_px"]:
        print(f"{n + ' as run (tiles)':<30}" + "".join(f"{r['as_run_with_tiles_kmac_per_px'][n]:>14.2f}" for r in rows))
    ok = math.isclose(check["counted_attention"], check["analytic_attention"], rel_tol=1e-6)
    print(f"counted vs analytic attention MACs (tiny model): {check['counted_attention']:.0f} vs "
          f"{check['analytic_attention']:.0f} -> {'match' if ok else 'MISMATCH'}")
    write_result(args.out or RESULTS / "complexity.json", {"rows": rows, "attention_check": check,
                                                           "attention_check_matches": ok})
    return 0 if ok else 1


def run_ladder(args) -> int:
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here")
    device = torch.device(args.device)
    results = []
    for name in args.models:
        result = ladder(name, args.repeat, device)
        results.append(result)
        print(f"\n{name}: context model + g_e for all groups of a {WIDTH}x{HEIGHT} image (medians of {args.repeat})")
        print(f"{'rung':<46}{'kMAC/px':>10}{'vs (a)':>9}{'ms':>9}{'speed-up':>10}")
        for label, r in result["rows"].items():
            print(f"{label:<46}{r['kmac_per_px']:>10.1f}{100 * r['complexity_vs_a']:>8.0f}%"
                  f"{r['ms']['median']:>9.0f}{r['speedup_vs_a']:>9.2f}x")
        if device.type != "cuda":
            print(f"{'(e) + Triton kernels':<46}{'n/a: CUDA only (run with --device cuda)':>38}")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    write_result(args.out or RESULTS / f"ladder-{device.type}.json",
                 {"device": str(device), "gpu": gpu, "image": f"{WIDTH}x{HEIGHT}", "repeat": args.repeat,
                  "models": results}, device)
    return 0
