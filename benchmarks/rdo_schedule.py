"""Which oRDO learning-rate schedule works best for a given number of iterations.

    python benchmarks/rdo_schedule.py [--iters 26] [--crops 4] [--models small-mse0004 ...]
                                      [--lrs 0.01 0.02 ...] [--decays 0.6 0.7 ...]

The paper's schedule (lr 0.062, x0.72 per iteration) is made for 26 iterations; cut short
it has not settled yet. This sweeps (lr, decay) on 256x256 centre crops of held-out
*training* images (every 20th file of ../shared/data/train; never Kodak) with every
shipped rate model. The lr of iteration i is lr * decay^i whatever the run's length, so
one run of --iters iterations also gives every shorter run: the best loss seen among
iterates 0..n is what optimize_latents(iterations=n) would return. Reported: the mean
change of the model loss R + lambda*255^2*MSE per budget n, for the best (lr, decay) and
for the paper's. Writes benchmarks/results/rdo-schedule.{json,png}.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import ecf_engine
from ecf_engine.evaluate import machine
from ecf_engine.rdo import PAPER_DECAY, PAPER_LR, optimize_latents
from ecf_engine.train import centre_crop, image_files, load_rgb, split

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "train"
LRS = (0.01, 0.015, 0.02, 0.03, 0.045, 0.062)
DECAYS = (0.6, 0.7, 0.8, 0.9)
SHOWN = (2, 4, 8, 12, 16, 20, 26)


def held_out_crops(count: int, size: int = 256) -> torch.Tensor:
    val = split(image_files(TRAIN))[1]
    picks = [val[round(i * (len(val) - 1) / max(1, count - 1))] for i in range(count)]
    return torch.stack([centre_crop(load_rgb(path), size) for path in picks])


def sweep(name: str, x: torch.Tensor, iters: int, cells: list[tuple[float, float]]) -> dict:
    """{"lr,decay": [mean relative loss change of the best iterate among 0..n, n = 0..iters]}"""
    engine = ecf_engine.load(name)
    y, z = engine.analyze(x)
    H, W = x.shape[-2:]
    out = {}
    for lr, decay in tqdm(cells, desc=name, dynamic_ncols=True):
        history: list[torch.Tensor] = []
        optimize_latents(engine.model, x, y, z, H, W, iterations=iters, lr=lr, decay=decay, history=history)
        losses = torch.stack(history)                                 # (iters + 1, B)
        best = torch.cummin(losses, dim=0).values / losses[0] - 1
        out[f"{lr},{decay}"] = best.mean(1).tolist()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=26)
    p.add_argument("--crops", type=int, default=4)
    p.add_argument("--models", nargs="+", default=ecf_engine.QUALITIES)
    p.add_argument("--lrs", nargs="+", type=float, default=LRS)
    p.add_argument("--decays", nargs="+", type=float, default=DECAYS)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "rdo-schedule.json"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    x = held_out_crops(args.crops)
    paper = (PAPER_LR, PAPER_DECAY)
    cells = sorted(set(itertools.product(args.lrs, args.decays)) | {paper})
    t0 = time.perf_counter()
    per_model = {name: sweep(name, x, args.iters, cells) for name in args.models}
    mean = {key: np.mean([per_model[m][key] for m in args.models], axis=0).tolist() for key in per_model[args.models[0]]}
    paper_key = f"{paper[0]},{paper[1]}"
    best = {}
    for n in range(1, args.iters + 1):
        key = min(mean, key=lambda k: mean[k][n])
        best[n] = {"lr_decay": key, "change": mean[key][n], "paper_change": mean[paper_key][n]}

    print(f"\nmean change of the loss over {len(args.models)} models x {args.crops} held-out crops")
    print(f"{'iters':>6}{'best lr,decay':>16}{'best':>10}{'paper':>10}")
    for n in (n for n in SHOWN if n <= args.iters):
        b = best[n]
        print(f"{n:>6}{b['lr_decay']:>16}{100 * b['change']:>9.2f}%{100 * b['paper_change']:>9.2f}%")
    summary = {"iters": args.iters, "crops": args.crops, "models": args.models, "lrs": args.lrs,
               "decays": args.decays, "machine": machine(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": time.perf_counter() - t0,
               "best_per_budget": best, "mean_change": mean, "per_model": per_model}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2))
    plot(summary, Path(args.json).with_suffix(".png"), paper_key)
    print(f"wrote {args.json} (+ .png); machine: {summary['machine']}")


def plot(summary: dict, path: Path, paper_key: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return
    ns = sorted(int(n) for n in summary["best_per_budget"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ns, [100 * summary["best_per_budget"][n]["change"] for n in ns], "o-", label="best (lr, decay) per budget")
    ax.plot(ns, [100 * summary["mean_change"][paper_key][n] for n in ns], "s--", label=f"paper ({paper_key})")
    ax.set_xlabel("oRDO iterations")
    ax.set_ylabel("change of R + λ·255²·MSE (%)")
    ax.set_title(f"oRDO schedules, {summary['crops']} held-out 256² crops × {len(summary['models'])} models")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
