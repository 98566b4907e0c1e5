"""Encode / decode time of one Kodak image by thread setting, on a quiet machine and with a
competing CPU-bound process, and whether the bits depend on the thread count.

    python benchmarks/threads.py [--image kodim01.png] [--reps 3] [--before-reps 1]

Settings, each in a fresh process (OpenMP reads its environment when torch loads):
* "torch default": what a program that sets nothing gets (torch's thread count = the cores,
  OpenMP's default wait policy): the behaviour `ecf` had before it set its threads;
* "1 thread", "2 threads", "ecf default": through ecf_engine.cli.setup_threads, as the
  `ecf` command runs (OMP_WAIT_POLICY=PASSIVE; the default counts the cores no other job
  keeps busy, see cli.default_threads).
"Loaded" adds one `python -c "while True: pass"` process for the whole measurement (killed
afterwards). Each run: one warm-up encode + decode (not counted), then the median of --reps
timed ones. Prints a table and writes benchmarks/results/threads.json with the machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = [("torch default", None, False), ("1 thread", 1, True), ("2 threads", 2, True), ("ecf default", None, True)]
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


def worker(image: str, threads: int | None, ecf_setup: bool, reps: int) -> dict:
    """Runs in the child process: set threads (before torch loads), time, hash the results."""
    if ecf_setup:
        from ecf_engine.cli import setup_threads
        setup_threads(threads)
    import numpy as np
    import torch
    import ecf_engine
    from ecf_engine.image import load_image
    engine = ecf_engine.load("default")
    rgb = load_image(image)[0]
    t = time.perf_counter()
    engine.decode(engine.encode(rgb))
    warmup_ms = 1000 * (time.perf_counter() - t)
    enc, dec = [], []
    for _ in range(reps):
        t = time.perf_counter()
        bits = engine.encode(rgb)
        enc.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        out = engine.decode(bits)
        dec.append(1000 * (time.perf_counter() - t))
    return {"threads": torch.get_num_threads(), "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)"),
            "warmup_ms": warmup_ms, "encode_ms": enc, "decode_ms": dec,
            "bits_sha256": hashlib.sha256(bits).hexdigest(),
            "pixels_sha256": hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()}


def run_setting(image: str, threads: int | None, ecf_setup: bool, reps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    cmd = [sys.executable, __file__, "--worker", "--image", image, "--reps", str(reps),
           "--threads", str(threads or 0)] + (["--ecf-setup"] if ecf_setup else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"worker failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu() -> dict:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in fields.get("flags", "").split()]
    return {"model": fields.get("model name", platform.processor() or "unknown"), "flags": flags,
            "cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))}


def busy_processes() -> list[str]:
    """Other processes using most of a core right now (ps), to state what 'idle' was."""
    try:
        ps = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return []
    rows = [line.split(None, 2) for line in ps.splitlines()[1:]]
    return [f"{r[2][:80]} ({r[1]} % CPU)" for r in rows if len(r) == 3 and float(r[1]) > 50 and int(r[0]) != os.getpid()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(KODAK / "kodim01.png"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--before-reps", type=int, default=1, help="timed runs of 'torch default' (slow when loaded)")
    p.add_argument("--out", default=str(RESULTS / "threads.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ecf-setup", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.image, args.threads or None, args.ecf_setup, args.reps)))
        return

    t0 = time.perf_counter()
    rows = []
    quiet = busy_processes()
    for load in ("idle", "loaded"):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "loaded" else None
        try:
            if hog:
                time.sleep(0.5)
            for name, threads, ecf_setup in SETTINGS:
                reps = args.reps if ecf_setup else args.before_reps
                r = run_setting(args.image, threads, ecf_setup, reps)
                r.update(load=load, setting=name, reps=reps, loadavg_1min=os.getloadavg()[0],
                         encode_median_ms=statistics.median(r["encode_ms"]),
                         decode_median_ms=statistics.median(r["decode_ms"]))
                rows.append(r)
                print(f"{load:<7} {name:<14} {r['threads']} thr  encode {r['encode_median_ms']:8.0f} ms  "
                      f"decode {r['decode_median_ms']:8.0f} ms", flush=True)
        finally:
            if hog:
                hog.kill()
                hog.wait()

    def ratio(load, what):
        one = next(r for r in rows if r["load"] == load and r["setting"] == "1 thread")
        default = next(r for r in rows if r["load"] == load and r["setting"] == "ecf default")
        return default[f"{what}_median_ms"] / one[f"{what}_median_ms"]
    identical = len({(r["bits_sha256"], r["pixels_sha256"]) for r in rows}) == 1
    result = {
        "benchmark": "threads",
        "command": ("" if os.nice(0) == 0 else f"nice -n {os.nice(0)} ") + "python benchmarks/threads.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "image": Path(args.image).name,
        "machine": {**cpu(), "system": f"{platform.system()} {platform.machine()}", "python": platform.python_version()},
        "idle_means": ("no process started by this benchmark; other jobs already running are listed in "
                       "busy_at_start (with a training job on one core, 'idle' has one core busy)"),
        "busy_at_start": quiet, "nice": os.nice(0),
        "loaded_means": "idle plus one busy-looping Python process",
        "default_vs_1_thread": {f"{load}_{what}": ratio(load, what) for load in ("idle", "loaded")
                                for what in ("encode", "decode")},
        "bits_and_pixels_identical": identical, "rows": rows, "seconds": time.perf_counter() - t0,
    }
    print()
    print(f"{'':<7} {'setting':<14} {'thr':>3} {'encode ms':>10} {'decode ms':>10}  policy")
    for r in rows:
        print(f"{r['load']:<7} {r['setting']:<14} {r['threads']:>3} {r['encode_median_ms']:>10.0f} "
              f"{r['decode_median_ms']:>10.0f}  {r['wait_policy']}")
    print("ecf default / 1 thread: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["default_vs_1_thread"].items()))
    print(f"bits and pixels identical across settings: {identical}; busy before start: {', '.join(quiet) or 'none'}")
    print(f"machine: {result['machine']['model']} ({' '.join(result['machine']['flags'])}), "
          f"{result['machine']['affinity']} cores")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
