"""Training: random crops (+ flips), loss R + lambda * 255^2 * MSE, Adam, resumable.

    python -m ecf_engine.train --preset small --lmbda 0.014 --steps 20000 --out runs/small
    python -m ecf_engine.train --init runs/small/best.safetensors --lmbda 0.007 --steps 3000 --lr 2e-4 --out runs/q2
    python -m ecf_engine.train --preset small-vr --init default --ste --balance --steps 6800 --lr 5e-5 --batch 2 --out runs/vr
    torchrun --nproc-per-node 2 -m ecf_engine.train --preset small-vr ... --batch 4 --out runs/vr-ddp

Crops are 256x256 by default, as in the paper: at the small preset's 16x downsampling a
128x128 crop is a single 8x8 window of latents (and a 2x2 hyperprior map), which leaves
the shifted windows and the hyperprior little to learn from.

Every `--val-every` steps the model is scored on centre crops of images held out from
the training folder (every 20th file; never Kodak); the best scoring weights are
exported as safetensors (fp16) to OUT/best.safetensors, OUT/last.pt holds the training
state for --resume, and OUT/log.jsonl gets one line per validation.

Throughput (benchmarks/train_throughput.py measures it):
* --precision auto: bf16 autocast on CUDA and on CPUs with AVX512_BF16 / AMX (GDN / IGDN,
  the likelihoods and the loss stay in fp32), else fp32 with a one-line message. Weights
  and activations are channels_last: oneDNN's bf16 convolutions reorder NCHW tensors on
  every call otherwise.
* Data parallel: under torchrun, DistributedDataParallel (gloo on the CPU, NCCL on CUDA).
  --batch is the number of crops per step over all ranks (so the recipe does not depend
  on the rank count); every rank draws its own crops and qualities; only rank 0
  validates, exports and writes checkpoints. torchrun gives each rank one thread.
* On CUDA the training images are kept on the GPU as uint8 and cropped there.
* GDN / IGDN take a hand-written backward and attention is written out (matmul, softmax,
  matmul) when gradients are on; the coder keeps the reference ops (tests compare them).
* --compile: torch.compile (inductor) fuses the elementwise work of forward and backward.
  Worth it for runs of more than a few hundred steps.

Runs in pieces: --time-budget SECONDS (counted from the start, image loading included)
stops cleanly in time with a validation, the export and the checkpoint; --stop-after N
stops after N steps. `--resume` with the same command goes on with the same learning-rate
schedule, and the crops and noise of step s are a function of (seed, rank, s), so a run
resumed from a full checkpoint takes the same steps as one that was never interrupted.
last.pt is compact (about 14 MiB for the small preset): fp16 weights, Adam's exp_avg as
blockwise int8 and sqrt(exp_avg_sq) log-quantized to uint8 (fp32 scales per block of
256); --full-checkpoint writes the exact fp32 state instead. Both forms, and the
checkpoints written before the compact form existed, load for --resume / --continue-from.

--continue-from OLD/last.pt starts a new run (new OUT, new step count and schedule) from a
finished run's weights *and* Adam moments. With a low --lr and --warmup 0 this goes on
training without the fresh-optimizer restart that --init makes, e.g.

    python -m ecf_engine.train --continue-from runs/a/last.pt --ste --lmbda 0.014 --steps 1400 --lr 3e-5 --warmup 0 --batch 2 --out runs/b
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from tqdm import tqdm

from .config import QUALITY_LAMBDAS, Config, lambda_of_quality
from .errors import ECFError
from .model import ECFModel, rate_distortion_loss
from .weights import load_weights, save_weights

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}
HOLDOUT_EVERY = 20


class TrainingError(ECFError, ValueError):
    """A training option, checkpoint or launch that cannot work (said before any training)."""


class DataError(ECFError, FileNotFoundError):
    """The data folder is missing or holds no usable images."""


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def split(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(train, held-out validation): every HOLDOUT_EVERY-th file is held out."""
    val = files[::HOLDOUT_EVERY]
    return [f for f in files if f not in val], val


def load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) uint8."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()


def random_crops(images: list[torch.Tensor], batch: int, size: int, rng: random.Random) -> torch.Tensor:
    """(batch, 3, size, size) float in [0, 1], on the device the uint8 images are on."""
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
def validate(model: ECFModel, images: list[torch.Tensor], lmbda: float, size: int = 256,
             balance: bool = False) -> dict:
    """Held-out loss, bpp and PSNR in fp32; a variable-rate model is scored at every integer
    quality (loss: the mean over qualities, each weighed as in training with `balance`, plus a
    row per quality, unweighted)."""
    model.eval()
    device = next(model.parameters()).device
    qualities = range(1, model.cfg.rates + 1) if model.cfg.rates else [None]
    per_quality = {}
    for q in qualities:
        lq = lmbda if q is None else QUALITY_LAMBDAS[q - 1]
        rows = []
        for img in images:
            x = centre_crop(img, size)[None].to(device)
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
    if balance:
        mean["loss"] = float(np.mean([float(balance_weights(QUALITY_LAMBDAS[q - 1])) * v["loss"]
                                      for q, v in per_quality.items()]))
    return {**mean, "qualities": {str(q): v for q, v in per_quality.items()}}


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512_BF16 or AMX), where autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def pick_precision(choice: str, device: torch.device, verbose: bool = True) -> str:
    """'bf16' or 'fp32' for --precision auto|bf16|fp32."""
    if choice != "auto":
        return choice
    if device.type == "cuda" or bf16_supported():
        return "bf16"
    if verbose:
        print("this CPU has no native bf16 (AVX512_BF16 / AMX): training in fp32")
    return "fp32"


# --balance: a crop's loss R + lambda * 255^2 * MSE grows about as sqrt(lambda) over the
# paper's range (small-vr on Kodak: ~0.6 at lambda 0.004, ~1.2 at 0.014, ~1.7 at 0.026), so in a
# plain mean over crops of every rate the lowest rates pull the shared weights a sixth as
# hard as the highest. Weighing each crop by sqrt(BALANCE_LAMBDA / lambda) evens that out.
BALANCE_LAMBDA = 0.014


def balance_weights(lmbda: torch.Tensor) -> torch.Tensor:
    """Per-crop loss weights sqrt(BALANCE_LAMBDA / lambda) (1 at lambda 0.014)."""
    return (BALANCE_LAMBDA / torch.as_tensor(lmbda, dtype=torch.float32)).sqrt()


def sample_qualities(batch: int, rates: int, rng: random.Random) -> torch.Tensor:
    """One quality per crop, uniform over [1, rates]: every lambda of the range, in between too."""
    return torch.tensor([rng.uniform(1.0, float(rates)) for _ in range(batch)])


def learning_rate(step: int, steps: int, peak: float, warmup: int = 200, floor: float = 1e-5) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one rank's crops, qualities and noise at one step: resumed runs repeat them."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()[:7], "little")


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel (one pass over all parameters; ~3 % of a CPU step saved)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def train_step(model, opt: torch.optim.Optimizer, x: torch.Tensor, quality, lmbda, precision: str,
               ste: bool = False, weight: torch.Tensor | None = None) -> dict:
    """One Adam step on crops x (B, 3, s, s); model may be wrapped in DistributedDataParallel;
    `weight` (B,) weighs the crops' losses. Returns the batch's loss terms (tensors, not synced
    to the host)."""
    # bf16 autocast: convs and matmuls in bf16; GDN, likelihoods and the loss stay fp32
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(x, ste=ste, quality=quality)
    r = rate_distortion_loss(out, x, lmbda, weight)
    opt.zero_grad(set_to_none=True)
    r["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return r


# The paper's lambdas (MSE) span 0.002 .. 0.058. Outside that is as likely a typo (0.0014
# for 0.014) as an intended rate, and a typo costs a whole run to notice: an error unless
# --any-lmbda (a warning was missed in a log once, and four runs trained at lambda / 10).
PAPER_LAMBDAS = (0.002, 0.058)


# -- checkpoints -------------------------------------------------------------------------
#
# Format 1 (no "format" key): fp32 model state dict and torch's Adam state dict.
# Format 2, compact: fp16 weights; the Adam moments of all parameters concatenated in
# parameter order, each parameter's padded to whole blocks of BLOCK values: exp_avg as int8 with an fp32 scale
# per block (max |v| / 127), sqrt(exp_avg_sq) as uint8 codes on a per-block log scale
# between the block's smallest and largest non-zero value (fp32), code 0 for exact zeros.
# The moments' relative error is at most 1/254 of the exp_avg block's largest value and
# exp(range / 508) - 1 of each sqrt(exp_avg_sq) value.

BLOCK = 256
COMPACT = 2


def _blocks(flat: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(flat, (0, -flat.numel() % BLOCK)).view(-1, BLOCK)


def quantize_int8(flat: torch.Tensor) -> dict:
    """Blockwise absmax int8 of a float vector (n,)."""
    b = _blocks(flat.float())
    scale = b.abs().amax(1) / 127
    q = torch.round(b / scale.clamp_min(1e-38)[:, None]).to(torch.int8)
    return {"q": q.flatten()[:flat.numel()].clone(), "scale": scale}


def dequantize_int8(d: dict) -> torch.Tensor:
    q = d["q"]
    return (_blocks(q.float()) * d["scale"][:, None]).flatten()[:q.numel()]


def quantize_log_uint8(flat: torch.Tensor) -> dict:
    """Blockwise log-scale uint8 of a non-negative vector (n,): code 0 is 0, codes 1..255
    are the block's log range [lo, hi] in 254 even steps."""
    b = _blocks(flat.float())
    pos = b > 0
    logs = torch.where(pos, b.clamp_min(1e-38).log(), torch.zeros_like(b))
    lo = torch.where(pos, logs, torch.full_like(b, math.inf)).amin(1)
    hi = torch.where(pos, logs, torch.full_like(b, -math.inf)).amax(1)
    empty = ~pos.any(1)
    lo, hi = lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
    t = (logs - lo[:, None]) / (hi - lo).clamp_min(1e-12)[:, None]
    code = torch.where(pos, 1 + torch.round(t.clamp(0, 1) * 254), torch.zeros_like(b)).to(torch.uint8)
    return {"code": code.flatten()[:flat.numel()].clone(), "lo": lo, "hi": hi}


def dequantize_log_uint8(d: dict) -> torch.Tensor:
    code = d["code"]
    c = _blocks(code.float())
    v = (d["lo"][:, None] + (c - 1) / 254 * (d["hi"] - d["lo"])[:, None]).exp()
    return torch.where(c > 0, v, torch.zeros_like(v)).flatten()[:code.numel()]


def compact_optimizer(sd: dict) -> dict:
    """torch's Adam state dict -> the compact form (parameters without a gradient yet have no state)."""
    ids = [i for g in sd["param_groups"] for i in g["params"] if i in sd["state"]]
    if not ids:
        return {"param_groups": sd["param_groups"], "ids": [], "numel": [], "shapes": []}
    st = [sd["state"][i] for i in ids]
    return {"param_groups": sd["param_groups"], "ids": ids,
            "numel": [s["exp_avg"].numel() for s in st], "shapes": [list(s["exp_avg"].shape) for s in st],
            "step": torch.stack([s["step"].float().cpu().reshape(()) for s in st]),
            "exp_avg": quantize_int8(_padded_cat([s["exp_avg"] for s in st])),
            "sqrt_exp_avg_sq": quantize_log_uint8(_padded_cat([s["exp_avg_sq"] for s in st]).sqrt())}


def _padded_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Flattened and concatenated, each padded with zeros to whole blocks (blocks never span
    two parameters, whose moments can differ by orders of magnitude)."""
    return torch.cat([_blocks(t.detach().float().cpu().flatten()).flatten() for t in tensors])


def _unpadded_split(flat: torch.Tensor, numels: list[int]) -> list[torch.Tensor]:
    parts = flat.split([-(-n // BLOCK) * BLOCK for n in numels])
    return [p[:n] for p, n in zip(parts, numels)]


def expand_optimizer(c: dict) -> dict:
    """Inverse of compact_optimizer: a state dict Adam.load_state_dict takes."""
    state = {}
    if c["ids"]:
        m = _unpadded_split(dequantize_int8(c["exp_avg"]), c["numel"])
        v = _unpadded_split(dequantize_log_uint8(c["sqrt_exp_avg_sq"]).square(), c["numel"])
        for k, i in enumerate(c["ids"]):
            shape = c["shapes"][k]
            state[i] = {"step": c["step"][k].clone(), "exp_avg": m[k].view(shape).clone(),
                        "exp_avg_sq": v[k].view(shape).clone()}
    return {"state": state, "param_groups": c["param_groups"]}


def save_checkpoint(path: Path, model: ECFModel, opt: torch.optim.Optimizer, meta: dict, compact: bool = True) -> None:
    """Write the training state; through a temporary file, so an interrupted save leaves the
    previous checkpoint intact."""
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if compact:
        # fp16 unless a value is out of its range (then that tensor stays fp32)
        sd = {k: (v.half() if v.is_floating_point() and v.abs().max() < 6e4 else v) for k, v in sd.items()}
        state = {**meta, "format": COMPACT, "model": sd, "optimizer": compact_optimizer(opt.state_dict())}
    else:
        state = {**meta, "format": 1, "model": sd, "optimizer": opt.state_dict()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint of any format (compact, full, or from before formats were numbered) as
    {"config": Config, "model": fp32 state dict, "optimizer": Adam state dict, "step", "best", ...}."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["config"] = Config.from_json(state["config"])
        fmt = state.get("format", 1)
        if fmt == COMPACT:
            state["model"] = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
            state["optimizer"] = expand_optimizer(state["optimizer"])
        elif fmt != 1:
            raise ValueError(f"checkpoint format {fmt} is newer than this version knows")
        if not isinstance(state.get("model"), dict) or not isinstance(state.get("optimizer"), dict):
            raise KeyError("model or optimizer")
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise TrainingError(f"{path}: not a training checkpoint ({type(e).__name__}: {e})") from e
    return state


def restore_run(state: dict, model: ECFModel, opt: torch.optim.Optimizer) -> None:
    """Load a read_checkpoint() state (weights and Adam moments) into model and opt, on the
    model's device; the moments take each parameter's memory layout (channels_last)."""
    model.load_state_dict(state["model"])
    saved = state["optimizer"]
    fused = opt.param_groups[0].get("fused")
    # the saved groups' settings replace opt's: keep opt's kernel choice (and so where Adam's
    # step counters live, beside the parameters for the fused kernel)
    opt.load_state_dict({**saved, "param_groups": [{**g, "fused": fused} for g in saved["param_groups"]]})
    for p in model.parameters():
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                st[k] = torch.empty_like(p).copy_(st[k])


def convert_checkpoint(src: str | Path, dst: str | Path, compact: bool = True) -> None:
    """Rewrite a checkpoint of any format as compact (or full) without training, e.g.
    `python -m ecf_engine.train --convert runs/a/last.pt runs/a/last-compact.pt`."""
    state = read_checkpoint(src)
    cfg = state["config"]
    model = ECFModel(cfg)
    opt = torch.optim.Adam(model.parameters())
    restore_run(state, model, opt)
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer", "format")}
    save_checkpoint(Path(dst), model, opt, {**meta, "config": cfg.to_json()}, compact=compact)


def same_architecture(a: Config, b: Config) -> bool:
    return a.replace(lmbda=0.0, rates=0) == b.replace(lmbda=0.0, rates=0)


# -- data parallel -------------------------------------------------------------------------

def launch_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """(4,) int64: a SHA-256 prefix of every parameter's bytes, to compare ranks' weights exactly."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().clone(memory_format=torch.contiguous_format).view(torch.uint8).numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.int64)


def ranks_agree(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether every rank holds bit-identical weights (a collective: all ranks call it)."""
    mine = fingerprint(model).to(device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return all(torch.equal(mine, e) for e in every)


def any_rank(flag: bool, device: torch.device, world: int) -> bool:
    """flag on any rank (a collective when world > 1): keeps stopping decisions in step."""
    if world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# -- the run -------------------------------------------------------------------------------

def check_args(args) -> Config:
    """Every check that needs no data and no checkpoint: the config of --preset."""
    try:
        cfg = Config.from_name(args.preset)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    lo, hi = PAPER_LAMBDAS
    if not (lo <= args.lmbda <= hi or args.any_lmbda):
        raise TrainingError(f"--lmbda {args.lmbda} is outside the paper's range {lo}..{hi}: check for a missing "
                            "or extra zero, or pass --any-lmbda to train at it anyway")
    for name in ("steps", "batch", "val_every"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.crop < 64 or args.crop % 64:
        raise TrainingError(f"--crop must be a multiple of 64, got {args.crop}")
    if args.warmup < 0:
        raise TrainingError(f"--warmup must be >= 0, got {args.warmup}")
    if args.init and args.continue_from:
        raise TrainingError("--init and --continue-from exclude each other")
    if args.continue_from and not Path(args.continue_from).is_file():
        raise TrainingError(f"--continue-from {args.continue_from}: no such checkpoint")
    if args.time_budget is not None and not args.time_budget > 0:
        raise TrainingError(f"--time-budget must be positive, got {args.time_budget}")
    if args.stop_after is not None and args.stop_after < 1:
        raise TrainingError(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.balance and not cfg.rates:
        raise TrainingError(f"--balance weighs the rates of a variable-rate model; preset {args.preset!r} has one "
                            "lambda (--lmbda)")
    return cfg if cfg.rates else cfg.replace(lmbda=args.lmbda)


def starting_point(args, cfg: Config, ckpt: Path):
    """What the run starts from, read and checked before any image is loaded:
    ("resume" | "continue", checkpoint state), ("init", weights) or (None, None)."""
    if args.resume and ckpt.is_file():
        state = read_checkpoint(ckpt)
        if state["config"] != cfg:
            raise TrainingError(f"{ckpt} was trained with another config ({state['config']}); use a fresh --out")
        if state.get("balance", False) != args.balance:     # its best loss is only comparable the same way
            raise TrainingError(f"{ckpt} was trained {'with' if state.get('balance') else 'without'} --balance; "
                                "resume it the same way, or use a fresh --out")
        return "resume", state
    if args.continue_from:
        state = read_checkpoint(args.continue_from)
        if state["config"].replace(lmbda=cfg.lmbda) != cfg:
            raise TrainingError(f"--continue-from {args.continue_from} has another architecture than preset "
                                f"{args.preset!r} ({state['config']})")
        return "continue", state
    if args.init:
        try:
            init, _ = load_weights(args.init)
        except (ECFError, OSError, ValueError) as e:
            raise TrainingError(f"--init {args.init}: {e}") from None
        if not same_architecture(init.cfg, cfg) or (init.cfg.rates and not cfg.rates):
            raise TrainingError(f"--init {args.init} has another architecture than preset {args.preset!r} "
                                f"({init.cfg})")
        return "init", init
    return None, None


def train(args) -> dict:
    """Run the training of `args` (main()'s options); returns the last validation row."""
    t0 = time.monotonic()
    cfg = check_args(args)
    rank, world, local_rank = launch_world()
    out = Path(args.out)
    ckpt = out / "last.pt"
    kind, start = starting_point(args, cfg, ckpt)
    train_files, val_files = split(image_files(args.data))
    if world > len(train_files):
        raise TrainingError(f"{world} ranks but only {len(train_files)} training images in {args.data}: "
                            "use fewer processes or more images")
    if args.batch % world:
        raise TrainingError(f"--batch {args.batch} (crops per step over all ranks) must be divisible by "
                            f"the {world} ranks")
    if not val_files:
        raise DataError(f"no held-out images in {args.data}")
    device = torch.device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    main_rank = rank == 0
    say = tqdm.write if main_rank else (lambda *a, **k: None)

    train_images = [load_rgb(f) for f in tqdm(train_files, desc="loading", leave=False, disable=not main_rank)]
    train_images = [im for im in train_images if min(im.shape[1:]) >= args.crop]
    if len(train_images) < world:
        raise DataError(f"{len(train_images)} training images of at least {args.crop}x{args.crop} in {args.data}, "
                        f"fewer than the {world} ranks")
    val_images = [load_rgb(f) for f in val_files]
    if device.type == "cuda":               # crops are cut on the GPU from uint8 images
        train_images = [im.to(device) for im in train_images]
    say(f"{len(train_images)} training images, {len(val_images)} held out for validation"
        + (f"; {world} ranks" if world > 1 else ""))

    torch.manual_seed(args.seed)
    model = ECFModel(cfg).train()
    if kind == "init":
        if cfg.rates and not start.cfg.rates:            # a fixed-rate model starts a variable-rate one
            missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
            if set(missing) != {"log_gain", "log_inv_gain"} or unexpected:
                raise TrainingError(f"--init {args.init}: unexpected tensors {missing + unexpected}")
            model.init_gains(start.cfg.lmbda)
            say(f"initialized from {args.init} (lambda {start.cfg.lmbda}), gains for lambda "
                f"{QUALITY_LAMBDAS[0]}..{QUALITY_LAMBDAS[-1]}")
        else:
            model.load_state_dict(start.state_dict())
            say(f"initialized from {args.init}" + ("" if cfg.rates else f" (fine-tuning to lambda {cfg.lmbda})"))
    model = model.to(device, memory_format=torch.channels_last)
    opt = make_optimizer(model, args.lr)
    step, best = 0, float("inf")
    if kind == "resume":
        restore_run(start, model, opt)
        step, best = start["step"], start["best"]
        say(f"resumed at step {step}, best validation loss {best:.4f}")
        old = start.get("schedule")
        new = {"steps": args.steps, "lr": args.lr, "warmup": args.warmup}
        if old and old != new:
            say(f"note: the schedule changes from {old} to {new}")
    elif kind == "continue":
        restore_run(start, model, opt)
        say(f"continuing from {args.continue_from} (its step {start['step']}, with its Adam moments)")
    start = None
    precision = pick_precision(args.precision, device, verbose=main_rank)
    if step >= args.steps:
        say(f"{ckpt} is at step {step} already (--steps {args.steps}): nothing to do")
        return {}
    local_batch = args.batch // world

    def batch_at(s: int):
        rng = random.Random(step_seed(args.seed, rank, s))
        torch.manual_seed(step_seed(args.seed, rank, s))
        x = random_crops(train_images, local_batch, args.crop, rng).to(device).contiguous(
            memory_format=torch.channels_last)
        q = sample_qualities(local_batch, cfg.rates, rng).to(device) if cfg.rates else None
        lmbda = (torch.tensor([lambda_of_quality(v) for v in q.tolist()], device=device) if cfg.rates
                 else args.lmbda)
        return x, q, lmbda, (balance_weights(lmbda).to(device) if args.balance else None)

    # Estimates of one step and one validation, timed before training when there is a budget
    # (the budget must hold a step, the final validation and the saves).
    step_s, val_s, save_s = None, None, 2.0
    if args.time_budget is not None:
        x, q, lmbda, _ = batch_at(step)
        t = time.monotonic()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out_ = model(x, ste=args.ste, quality=q)
        rate_distortion_loss(out_, x, lmbda)["loss"].backward()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        step_s = time.monotonic() - t
        t = time.monotonic()
        validate(model, val_images[:1], args.lmbda) if not cfg.rates else _validate_one(model, val_images[0])
        val_s = (time.monotonic() - t) * len(val_images) * max(1, cfg.rates)
        needed = (time.monotonic() - t0) + 2 * step_s + val_s + save_s
        if needed > args.time_budget:
            raise TrainingError(f"--time-budget {args.time_budget:g} s is too short: loading, one step "
                                f"({step_s:.1f} s), the final validation (~{val_s:.0f} s) and the saves need "
                                f"~{needed:.0f} s here")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                        gradient_as_bucket_view=True)
    else:
        net = model
    if args.compile:                        # validation and the exports use the eager model
        net = torch.compile(net)
    out.mkdir(parents=True, exist_ok=True)
    say(f"precision {precision} on {device}, {local_batch} crops per step per rank"
        + (f", time budget {args.time_budget:g} s" if args.time_budget else "")
        + ("; compiling (the first steps take a minute or two)" if args.compile else ""))
    meta = {"config": cfg.to_json(), "schedule": {"steps": args.steps, "lr": args.lr, "warmup": args.warmup},
            "precision": precision, "batch": args.batch, "world": world, "seed": args.seed, "balance": args.balance}
    first = step
    v, t_run = {}, time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True, disable=not main_rank)
    try:
        while step < args.steps:
            t_step = time.monotonic()
            lr = learning_rate(step, args.steps, args.lr, warmup=args.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            x, q, lmbda, weight = batch_at(step)
            r = train_step(net, opt, x, q, lmbda, precision, args.ste, weight)
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == first + 1:      # a host sync: not every step on a GPU
                bar.set_postfix(loss=f"{r['loss'].item():.3f}", bpp=f"{r['bpp'].item():.3f}",
                                psnr=f"{-10 * math.log10(max(r['mse'].item(), 1e-10)):.2f}")
            _sync(device)
            dt = time.monotonic() - t_step
            step_s = dt if step_s is None else 0.9 * step_s + 0.1 * dt
            # stop early enough for one more step, a validation and the saves
            late = (args.time_budget is not None
                    and time.monotonic() - t0 + 2 * step_s + 1.5 * (val_s or 0) + save_s + 5 > args.time_budget)
            stop = any_rank(late or (args.stop_after is not None and step - first >= args.stop_after), device, world)
            if step % args.val_every == 0 or step == args.steps or stop:
                if world > 1 and not ranks_agree(model, device):
                    raise RuntimeError(f"the ranks' weights differ at step {step}")
                if main_rank:
                    t_val = time.monotonic()
                    v = validate(model, val_images, args.lmbda, balance=args.balance)
                    improved = v["loss"] < best
                    if improved:
                        best = v["loss"]
                        card = {"preset": args.preset, "lmbda": cfg.lmbda if not cfg.rates else list(QUALITY_LAMBDAS),
                                "precision": precision, "steps": step, "batch": args.batch, "world": world,
                                "ste": args.ste, "balance": args.balance, "crop": args.crop, "data": str(args.data),
                                "device": str(device),
                                "init": args.init or args.continue_from,
                                "wall_s": round(time.monotonic() - t0), "val": v}
                        save_weights(model, out / "best.safetensors", card=card)
                    save_checkpoint(ckpt, model, opt, {**meta, "step": step, "best": best, "lr": lr},
                                    compact=not args.full_checkpoint)
                    with open(out / "log.jsonl", "a") as f:
                        f.write(json.dumps({"step": step, "lr": lr, "wall_s": round(time.monotonic() - t0, 1),
                                            "steps_per_s": round((step - first) / (time.monotonic() - t_run), 4),
                                            **{k: v[k] for k in ("loss", "bpp", "psnr", "qualities") if k in v}})
                                + "\n")
                    say(f"step {step}: val loss {v['loss']:.4f} bpp {v['bpp']:.4f} psnr {v['psnr']:.2f}"
                        + (" (best, exported)" if improved else "")
                        + (f"; weights identical on {world} ranks" if world > 1 else ""))
                    val_s = time.monotonic() - t_val
            if stop:
                why = (f"time budget of {args.time_budget:g} s" if late else f"--stop-after {args.stop_after}")
                say(f"{why} reached at step {step}: checkpoint written, continue with --resume")
                break
        if world > 1:
            # every rank waits for rank 0's last save: a rank that leaves the group while another
            # still works can hang that one's shutdown. (After an error, torchrun ends the rest.)
            dist.barrier()
            dist.destroy_process_group()
    finally:
        bar.close()
    return v


def _validate_one(model: ECFModel, img: torch.Tensor) -> None:
    """One validation forward (quality 1) of a variable-rate model, for timing."""
    with torch.no_grad():
        model.eval()
        model(centre_crop(img)[None].to(next(model.parameters()).device), noise=False, quality=1.0)
        model.train()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecf train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--lmbda", type=float, default=0.014)
    p.add_argument("--any-lmbda", action="store_true", help="allow a lambda outside the paper's 0.002..0.058")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=8,
                   help="crops per step, over all ranks (default 8; 2 on a 2-core CPU, 4 with two ranks)")
    p.add_argument("--crop", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (--warmup steps, then cosine decay to 1e-5)")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (default 200; 0 to start at --lr)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train"))
    p.add_argument("--out", default="runs/train")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ste", action="store_true",
                   help="mixed quantization: rates from noisy latents, g_s / h_s / context model "
                   "fed the rounded latents (straight-through gradient), as when coding")
    p.add_argument("--balance", action="store_true",
                   help="variable-rate models: weigh each crop's loss by sqrt(0.014 / lambda), so that "
                   "every rate pulls the shared weights alike (the loss grows ~sqrt(lambda))")
    p.add_argument("--resume", action="store_true", help="go on from OUT/last.pt (any checkpoint format)")
    p.add_argument("--init", help="start from these weights (shipped name or .safetensors), e.g. "
                   "to fine-tune a trained model to another lambda")
    p.add_argument("--continue-from", metavar="LAST_PT",
                   help="start from another run's last.pt: its weights and Adam moments, a new schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with AVX512_BF16 / AMX, else fp32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward and backward: ~1.2x faster steps after "
                   "one to two minutes of compiling per process (needs a C++ compiler on the CPU)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop cleanly (validation, export, checkpoint) before this many seconds")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop cleanly after N steps of this run")
    p.add_argument("--full-checkpoint", action="store_true",
                   help="write last.pt with fp32 weights and exact Adam moments (~3x the compact size)")
    p.add_argument("--convert", nargs=2, metavar=("SRC", "DST"),
                   help="only rewrite checkpoint SRC as DST (compact, or full with --full-checkpoint)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def run(argv=None) -> dict:
    """main() without the error handling: raises TrainingError / DataError on bad input."""
    args = parser().parse_args(argv)
    if args.convert:
        convert_checkpoint(*args.convert, compact=not args.full_checkpoint)
        return {}
    return train(args)


def main(argv=None) -> None:
    try:
        run(argv)
    except (ECFError, OSError) as e:
        rank, world, _ = launch_world()
        print(f"ecf train{f' (rank {rank})' if world > 1 else ''}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
