"""Model complexity in kMAC per pixel, per component, encoder and decoder.

    python benchmarks/complexity.py [--size 768x512] [--models paper default]

MACs are counted with torch's FlopCounterMode (MAC = FLOP / 2) on the real code paths
(g_a, h_a, h_s, g_s, and the context model run through the actual coding schedule).
Attention is counted too: our window attention runs through SDPA's math path (5-D
inputs with a float mask), which decomposes into counted bmm calls; the script checks
this against an analytic count (`analytic_attention`), and prints the paper's C_attn
formula (DESIGN.md section 1) for comparison. g_a and g_s are counted on whole maps (the
architecture); what they execute on overlapping tiles, halos included, is reported beside
(`as_run_with_tiles_kmac_per_px`). Writes benchmarks/results/complexity.json.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import ecf_engine
from ecf_engine import schedule
from ecf_engine.contextformer import WindowGrid
from ecf_engine.egr import egr
from ecf_engine.evaluate import machine

ROOT = Path(__file__).resolve().parents[1]


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="768x512")
    p.add_argument("--models", nargs="+", default=["paper", "default"])
    args = p.parse_args()
    width, height = map(int, args.size.split("x"))
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
    out = ROOT / "benchmarks" / "results" / "complexity.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "rows": rows, "attention_check": check}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
