"""Training throughput of one model, the old path against the new ones, side by side in one run.

    python benchmarks/train_throughput.py [--preset small] [--crop 256] [--batch 2] [--steps 8]
                                          [--warmup 2] [--device cpu|cuda] [--paths old bf16 ...]
    python -m benchmarks train ...        (the same)

Every path runs ecf_engine.train.train_step (Adam, loss, gradient clipping, as training does;
the new paths with train's fused Adam, the old one with torch's default Adam)
in a process of its own, on random 256x256 crops of the training images (random pixels
where the folder is missing), variable rate when the preset is:

    old          fp32, NCHW, 1 process x 1 thread, GDN and attention through the coder's
                 reference ops, torch's default Adam: how the shipped models were trained
    fp32-2t      the old path with 2 threads (intra-op parallel; reference only)
    fp32-ddp     fp32, channels_last, 2 processes x 1 thread (torchrun, gloo)
    bf16         bf16 autocast, channels_last, 1 process x 1 thread
    bf16-ddp     bf16 autocast, channels_last, 2 processes x 1 thread (torchrun, gloo)
    bf16-c       bf16, 1 process x 1 thread, --compile (torch.compile)
    bf16-ddp-c   bf16 DDP 2 x 1 thread, --compile
The new paths train with the training ops (GDN's hand-written backward, written-out attention).

On CUDA: old (fp32, NCHW), fp32-cl (fp32, channels_last) and bf16 (bf16, channels_last), one
GPU. --batch is the crops per step of one process; a DDP path takes --batch crops per rank.
--warmup steps are timed and reported apart (they hold torch.compile's compiling); then the
median and spread of --steps steps (device synchronized). `speedup` is the best new path's crops/s over the old path's.
Writes benchmarks/results/train-throughput-<device>.json and prints a table.

The throughput depends on what else runs: stop other jobs while measuring (a long
training job can be paused with `kill -STOP PID` and resumed with `kill -CONT PID`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import harness  # noqa: E402

# name -> (precision, channels_last, processes, threads per process, torch.compile, what it is)
CPU_PATHS = {
    "old": ("fp32", False, 1, 1, False, "fp32, NCHW, 1 process x 1 thread, reference ops (how the shipped "
                                        "models were trained)"),
    "fp32-2t": ("fp32", False, 1, 2, False, "the old path with 2 threads"),
    "fp32-ddp": ("fp32", True, 2, 1, False, "fp32, channels_last, DDP 2 x 1 thread (gloo)"),
    "bf16": ("bf16", True, 1, 1, False, "bf16 autocast, channels_last, 1 process x 1 thread"),
    "bf16-ddp": ("bf16", True, 2, 1, False, "bf16 autocast, channels_last, DDP 2 x 1 thread (gloo)"),
    "bf16-c": ("bf16", True, 1, 1, True, "bf16, 1 process x 1 thread, torch.compile"),
    "bf16-ddp-c": ("bf16", True, 2, 1, True, "bf16, DDP 2 x 1 thread (gloo), torch.compile"),
}
CUDA_PATHS = {
    "old": ("fp32", False, 1, 1, False, "fp32, NCHW, reference ops (the old path, on the GPU)"),
    "fp32-cl": ("fp32", True, 1, 1, False, "fp32, channels_last"),
    "bf16": ("bf16", True, 1, 1, False, "bf16 autocast, channels_last, crops cut on the GPU from uint8 images"),
}
OLD_PATHS = ("old", "fp32-2t")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "train"


def worker(args) -> None:
    """One path in this process (one rank of it under torchrun): time train_step and, on rank 0,
    write {"warmup_s": [...], "step_s": [...]} to --result."""
    import torch.distributed as dist

    from ecf_engine import train as tr
    from ecf_engine.config import Config, lambda_of_quality
    from ecf_engine.model import ECFModel

    torch.set_num_threads(args.threads)
    if args.old:                    # GDN and attention as the shipped models were trained (this process only)
        from ecf_engine import attention, layers
        layers.GDN.forward = layers.GDN.reference
        attention._attend = attention._attend_sdpa
    rank, world, local = tr.launch_world()
    device = torch.device(args.device)
    cfg = Config.from_name(args.preset)
    images = []
    if Path(args.data).is_dir():
        files = tr.image_files(args.data)[:args.images]
        images = [im for im in (tr.load_rgb(f) for f in files) if min(im.shape[1:]) >= args.crop]
    if not images:
        g = torch.Generator().manual_seed(0)
        images = [torch.randint(0, 256, (3, args.crop * 2, args.crop * 2), dtype=torch.uint8, generator=g)]
    images = [im.to(device) for im in images] if device.type == "cuda" else images
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = ECFModel(cfg).train().to(device, memory_format=fmt)
    # the old path: torch's default Adam; the new ones: what ecf_engine.train uses
    opt = torch.optim.Adam(model.parameters(), lr=1e-5) if args.old else tr.make_optimizer(model, 1e-5)
    net = model
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        net = torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True)
    net = torch.compile(net) if args.compile else net
    rng = random.Random(rank)
    times = []
    for _ in range(args.warmup + args.steps):
        x = tr.random_crops(images, args.batch, args.crop, rng).to(device).contiguous(memory_format=fmt)
        q = tr.sample_qualities(args.batch, cfg.rates, rng).to(device) if cfg.rates else None
        lmbda = torch.tensor([lambda_of_quality(v) for v in q.tolist()], device=device) if cfg.rates else 0.014
        harness.sync(device)
        t = time.perf_counter()
        tr.train_step(net, opt, x, q, lmbda, args.precision, ste=True)
        harness.sync(device)
        times.append(time.perf_counter() - t)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        Path(args.result).write_text(json.dumps({"warmup_s": times[:args.warmup], "step_s": times[args.warmup:]}))


def run_path(name: str, spec: tuple, args, tmp: Path) -> dict:
    precision, channels_last, procs, threads, compiled, about = spec
    result = tmp / f"{name}.json"
    inner = [str(Path(__file__).resolve()), "--worker", "--result", str(result), "--preset", args.preset,
             "--crop", str(args.crop), "--batch", str(args.batch), "--steps", str(args.steps),
             "--warmup", str(args.warmup), "--device", args.device, "--data", str(args.data),
             "--images", str(args.images), "--precision", precision, "--threads", str(threads)]
    inner += ["--channels-last"] if channels_last else []
    inner += ["--old"] if name in OLD_PATHS else []
    inner += ["--compile"] if compiled else []
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *inner]
           if procs > 1 else [sys.executable, *inner])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        return {"path": name, "about": about, "error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
    times = json.loads(result.read_text())
    steps = times["step_s"]
    med = statistics.median(steps)
    crops = args.batch * procs
    return {"path": name, "about": about, "precision": precision, "channels_last": channels_last, "compile": compiled,
            "processes": procs, "threads_per_process": threads, "crops_per_step": crops,
            "s_per_step": {"median": med, "min": min(steps), "max": max(steps), "n": len(steps)},
            "crops_per_s": crops / med, "warmup_s_per_step": times["warmup_s"],
            "wall_s": round(time.perf_counter() - t, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, help="crops per step per process (default 2 on a CPU, 16 on CUDA)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per path")
    p.add_argument("--warmup", type=int, default=2, help="steps before the timed ones, reported apart")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--paths", nargs="+", help="subset of the paths (default: all of the device's)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="training images (random pixels if missing)")
    p.add_argument("--images", type=int, default=24, help="images loaded from --data")
    p.add_argument("--out", type=Path)
    # worker options (one path in one process)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--old", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = 16 if args.device == "cuda" else 2
    if args.worker:
        worker(args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA GPU here", file=sys.stderr)
        return 2
    if min(args.steps, args.batch) < 1 or args.warmup < 0:
        raise SystemExit("--steps and --batch must be >= 1, --warmup >= 0")
    table = CUDA_PATHS if args.device == "cuda" else CPU_PATHS
    names = args.paths or list(table)
    unknown = [n for n in names if n not in table]
    if unknown or "old" not in names:
        raise SystemExit(f"--paths: {unknown or 'old is required'}; the {args.device} paths are {list(table)}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(run_path(name, table[name], args, Path(tmp)))
            r = rows[-1]
            print(f"{name}: " + (f"{r['s_per_step']['median']:.3f} s/step" if "error" not in r else f"failed: {r['error']}"),
                  flush=True)
    ok = [r for r in rows if "error" not in r]
    old = next((r for r in ok if r["path"] == "old"), None)
    new = [r for r in ok if r["path"] not in OLD_PATHS]
    best = max(new, key=lambda r: r["crops_per_s"], default=None)
    speedup = best["crops_per_s"] / old["crops_per_s"] if old and best else None
    device = torch.device(args.device)
    info = harness.machine_info(device)
    print(f"\n{harness.machine_text(info)}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
          + (f"; load average {load:.2f} before" if load is not None else ""))
    print(f"preset {args.preset}, {args.crop}x{args.crop} crops, {args.batch} per process, "
          f"{args.warmup} warm-up + {args.steps} timed steps per path\n")
    print(f"{'path':<12}{'procs x thr':>12}{'crops/step':>11}{'s/step':>9}{'min':>8}{'max':>8}{'crops/s':>9}"
          f"{'x old':>7}   warm-up s/step")
    for r in rows:
        if "error" in r:
            print(f"{r['path']:<12}  failed: {r['error']}")
            continue
        s = r["s_per_step"]
        x = r["crops_per_s"] / old["crops_per_s"] if old else float("nan")
        print(f"{r['path']:<12}{r['processes']:>7} x {r['threads_per_process']}{r['crops_per_step']:>11}"
              f"{s['median']:>9.3f}{s['min']:>8.3f}{s['max']:>8.3f}{r['crops_per_s']:>9.2f}{x:>7.2f}   "
              + " ".join(f"{w:.2f}" for w in r["warmup_s_per_step"]))
    if speedup:
        print(f"\nspeedup (best new path {best['path']} / old): {speedup:.2f}x")
    out = args.out or harness.RESULTS / f"train-throughput-{args.device}.json"
    harness.ARGV = ["train", *(sys.argv[1:] if argv is None else argv)]       # the command, as the suite names it
    harness.write_result(out, {"preset": args.preset, "crop": args.crop, "batch_per_process": args.batch,
                               "steps": args.steps, "warmup_steps": args.warmup,
                               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                               "load_average_before": load,
                               "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                               "speedup": speedup, "best_path": best["path"] if best else None, "rows": rows},
                         device)
    return 0 if old and best and len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
