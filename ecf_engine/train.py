"""Training: random crops (+ flips), loss R + lambda * 255^2 * MSE, Adam, resumable.

    python -m ecf_engine.train --preset small --lmbda 0.014 --steps 20000 --out runs/small
    python -m ecf_engine.train --init default --lmbda 0.007 --steps 3000 --lr 2e-4 --out runs/small-mse0007
    python -m ecf_engine.train --init default --ste --lmbda 0.014 --steps 2000 --lr 1e-4 --batch 2 --out runs/small-mse0014-ste

Crops are 256x256 by default, as in the paper: at the small preset's 16x downsampling a
128x128 crop is a single 8x8 window of latents (and a 2x2 hyperprior map), which leaves
the shifted windows and the hyperprior little to learn from. On a 2-core CPU, --batch 2
sees as many pixels per step as 8 crops of 128x128 and takes about as long.

Every `--val-every` steps the model is scored on centre crops of images held out from
the training folder (every 20th file; never Kodak); the best scoring weights are
exported as safetensors (fp16) to OUT/best.safetensors, and OUT/last.pt holds the
optimizer state for --resume.

--continue-from OLD/last.pt starts a new run (new OUT, new step count and schedule) from a
finished run's weights *and* Adam moments. With a low --lr and --warmup 0 this goes on
training without the fresh-optimizer restart that --init makes, e.g.

    python -m ecf_engine.train --continue-from runs/a/last.pt --ste --lmbda 0.014 --steps 1400 --lr 3e-5 --warmup 0 --batch 2 --out runs/b
"""
from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .config import QUALITY_LAMBDAS, Config, lambda_of_quality
from .model import ECFModel, rate_distortion_loss
from .weights import load_weights, save_weights

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}
HOLDOUT_EVERY = 20


def image_files(folder: str | Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def split(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(train, held-out validation): every HOLDOUT_EVERY-th file is held out."""
    val = files[::HOLDOUT_EVERY]
    return [f for f in files if f not in val], val


def load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) uint8."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()


def random_crops(images: list[torch.Tensor], batch: int, size: int, rng: random.Random) -> torch.Tensor:
    out = []
    for _ in range(batch):
        img = images[rng.randrange(len(images))]
        _, H, W = img.shape
        top, left = rng.randint(0, H - size), rng.randint(0, W - size)
        crop = img[:, top:top + size, left:left + size]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        if rng.random() < 0.5:
            crop = crop.flip(-2)
        out.append(crop)
    return torch.stack(out).float().div(255)


def centre_crop(img: torch.Tensor, size: int = 256) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, s, s) float in [0, 1], s = min(size, H, W) rounded down to 64."""
    _, H, W = img.shape
    s = min(size, H, W) // 64 * 64
    top, left = (H - s) // 2, (W - s) // 2
    return img[:, top:top + s, left:left + s].float().div(255)


@torch.no_grad()
def validate(model: ECFModel, images: list[torch.Tensor], lmbda: float, size: int = 256) -> dict:
    """Held-out loss, bpp and PSNR in fp32; a variable-rate model is scored at every integer
    quality (loss: the mean over qualities, plus a row per quality)."""
    model.eval()
    qualities = range(1, model.cfg.rates + 1) if model.cfg.rates else [None]
    per_quality = {}
    for q in qualities:
        lq = lmbda if q is None else QUALITY_LAMBDAS[q - 1]
        rows = []
        for img in images:
            x = centre_crop(img, size)[None]
            out = model(x, noise=False, quality=q)
            out["x_hat"] = out["x_hat"].clamp(0, 1)
            r = rate_distortion_loss(out, x, lq)
            rows.append((r["loss"].item(), r["bpp"].item(), -10 * math.log10(max(r["mse"].item(), 1e-10))))
        loss, bpp, psnr = np.mean(rows, axis=0).tolist()      # plain floats: checkpoints load with weights_only
        per_quality[q] = {"loss": loss, "bpp": bpp, "psnr": psnr}
    model.train()
    if not model.cfg.rates:
        return per_quality[None]
    mean = {k: float(np.mean([v[k] for v in per_quality.values()])) for k in ("loss", "bpp", "psnr")}
    return {**mean, "qualities": {str(q): v for q, v in per_quality.items()}}


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512_BF16 or AMX), where autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def pick_precision(choice: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for --precision auto|bf16|fp32."""
    if choice != "auto":
        return choice
    if device.type == "cuda" or bf16_supported():
        return "bf16"
    print("this CPU has no native bf16 (AVX512_BF16 / AMX): training in fp32")
    return "fp32"


def sample_qualities(batch: int, rates: int, rng: random.Random) -> torch.Tensor:
    """One quality per crop, uniform over [1, rates]: every lambda of the range, in between too."""
    return torch.tensor([rng.uniform(1.0, float(rates)) for _ in range(batch)])


def learning_rate(step: int, steps: int, peak: float, warmup: int = 200, floor: float = 1e-5) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


# The paper's lambdas (MSE) span 0.002 .. 0.058. Outside that is as likely a typo (0.0014
# for 0.014) as an intended rate, and a typo costs a whole run to notice: an error unless
# --any-lmbda (a warning was missed in a log once, and four runs trained at lambda / 10).
PAPER_LAMBDAS = (0.002, 0.058)


def restore_run(path: str | Path, model: ECFModel, opt: torch.optim.Optimizer, cfg: Config,
                device: torch.device, mismatch: str, any_lmbda: bool = False) -> dict:
    """Load a run's last.pt (weights and Adam moments) into model and opt and return it; its
    config must equal cfg (up to lambda with any_lmbda), else ValueError(mismatch)."""
    state = torch.load(path, map_location=device, weights_only=True)
    theirs = Config.from_json(state["config"])
    if (theirs.replace(lmbda=cfg.lmbda) if any_lmbda else theirs) != cfg:
        raise ValueError(mismatch)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return state


def train(args) -> None:
    lo, hi = PAPER_LAMBDAS
    if not (lo <= args.lmbda <= hi or args.any_lmbda):
        raise ValueError(f"--lmbda {args.lmbda} is outside the paper's range {lo}..{hi}: check for a missing "
                         "or extra zero, or pass --any-lmbda to train at it anyway")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.init and args.continue_from:
        raise ValueError("--init and --continue-from exclude each other")
    if args.continue_from and not Path(args.continue_from).is_file():
        raise FileNotFoundError(f"--continue-from {args.continue_from}: no such checkpoint")
    if args.time_budget is not None and args.time_budget <= 0:
        raise ValueError(f"--time-budget must be positive, got {args.time_budget}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    train_files, val_files = split(image_files(args.data))
    print(f"{len(train_files)} training images, {len(val_files)} held out for validation")
    train_images = [load_rgb(f) for f in tqdm(train_files, desc="loading", leave=False)]
    train_images = [im for im in train_images if min(im.shape[1:]) >= args.crop]
    val_images = [load_rgb(f) for f in val_files]

    cfg = Config.from_name(args.preset)
    cfg = cfg if cfg.rates else cfg.replace(lmbda=args.lmbda)
    torch.manual_seed(args.seed)
    model = ECFModel(cfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, best = 0, float("inf")
    ckpt = out / "last.pt"
    if args.resume and ckpt.is_file():
        state = restore_run(ckpt, model, opt, cfg, device,
                            mismatch=f"{ckpt} was trained with another config; use a fresh --out")
        step, best = state["step"], state["best"]
        print(f"resumed at step {step}, best validation loss {best:.4f}")
    elif args.continue_from:
        state = restore_run(args.continue_from, model, opt, cfg, device, any_lmbda=True,
                            mismatch=f"--continue-from {args.continue_from} has another architecture than preset {args.preset!r}")
        print(f"continuing from {args.continue_from} (its step {state['step']}, with its Adam moments)")
    elif args.init:
        init, _ = load_weights(args.init)
        if init.cfg.replace(lmbda=cfg.lmbda, rates=cfg.rates) != cfg:
            raise ValueError(f"--init {args.init} has another architecture than preset {args.preset!r}")
        if cfg.rates and not init.cfg.rates:            # a fixed-rate model starts a variable-rate one
            missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
            assert set(missing) == {"log_gain", "log_inv_gain"} and not unexpected, (missing, unexpected)
            model.init_gains(init.cfg.lmbda)
            print(f"initialized from {args.init} (lambda {init.cfg.lmbda}), gains for lambda "
                  f"{QUALITY_LAMBDAS[0]}..{QUALITY_LAMBDAS[-1]}")
        else:
            model.load_state_dict(init.state_dict())
            print(f"initialized from {args.init} (fine-tuning to lambda {cfg.lmbda})")
    rng = random.Random(args.seed + step)
    precision = pick_precision(args.precision, device)
    print(f"precision {precision} on {device}")
    start = time.time()
    step_s, val_s = None, 0.0                 # running step time; last validation + save time
    bar = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True)
    while step < args.steps:
        t_step = time.time()
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, args.steps, args.lr, warmup=args.warmup)
        x = random_crops(train_images, args.batch, args.crop, rng).to(device)
        q = sample_qualities(args.batch, cfg.rates, rng).to(device) if cfg.rates else None
        lmbda = torch.tensor([lambda_of_quality(v) for v in q.tolist()], device=device) if cfg.rates else args.lmbda
        # bf16 autocast: convs and matmuls in bf16; GDN, likelihoods and the loss stay fp32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out_ = model(x, ste=args.ste, quality=q)
        r = rate_distortion_loss(out_, x, lmbda)
        opt.zero_grad(set_to_none=True)
        r["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{r['loss'].item():.3f}", bpp=f"{r['bpp'].item():.3f}",
                        psnr=f"{-10 * math.log10(max(r['mse'].item(), 1e-10)):.2f}")
        dt = time.time() - t_step
        step_s = dt if step_s is None else 0.9 * step_s + 0.1 * dt
        # stop early enough for one more step, a validation and the saves
        out_of_time = (args.time_budget is not None
                       and time.time() - start + 2 * step_s + 1.5 * val_s + 10 > args.time_budget)
        if step % args.val_every == 0 or step == args.steps or out_of_time:
            t_val = time.time()
            v = validate(model, val_images, args.lmbda)
            improved = v["loss"] < best
            if improved:
                best = v["loss"]
                card = {"preset": args.preset, "lmbda": cfg.lmbda if not cfg.rates else list(QUALITY_LAMBDAS),
                        "precision": precision, "steps": step, "batch": args.batch, "ste": args.ste,
                        "crop": args.crop, "data": str(args.data), "device": str(device),
                        "init": args.init or args.continue_from,
                        "wall_s": round(time.time() - start), "val": v}
                save_weights(model, out / "best.safetensors", card=card)
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "best": best, "config": cfg.to_json()}, ckpt)
            tqdm.write(f"step {step}: val loss {v['loss']:.4f} bpp {v['bpp']:.4f} psnr {v['psnr']:.2f}"
                       + (" (best, exported)" if improved else ""))
            val_s = time.time() - t_val
        if out_of_time:
            tqdm.write(f"time budget of {args.time_budget:.0f} s reached at step {step}: checkpoint written, "
                       "continue with --resume")
            break
    bar.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="ecf train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--lmbda", type=float, default=0.014)
    p.add_argument("--any-lmbda", action="store_true", help="allow a lambda outside the paper's 0.002..0.058")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=8, help="crops per step (default 8; 2 on a 2-core CPU)")
    p.add_argument("--crop", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (--warmup steps, then cosine decay to 1e-5)")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (default 200; 0 to start at --lr)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train"))
    p.add_argument("--out", default="runs/train")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ste", action="store_true",
                   help="mixed quantization: rates from noisy latents, g_s / h_s / context model "
                   "fed the rounded latents (straight-through gradient), as when coding")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", help="start from these weights (shipped name or .safetensors), e.g. "
                   "to fine-tune a trained model to another lambda")
    p.add_argument("--continue-from", metavar="LAST_PT",
                   help="start from another run's last.pt: its weights and Adam moments, a new schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with AVX512_BF16 / AMX, else fp32")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop cleanly (validation, export, checkpoint) before this many seconds")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
