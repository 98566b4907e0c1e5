"""What every benchmark shares: the machine it ran on, synchronized timing with warm-up kept
apart, the result file (JSON under benchmarks/results/) and the optional plot library."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KODAK = ROOT.parent / "shared" / "data" / "kodak"
SAMPLE = ROOT / "ecf_engine" / "data" / "sample.png"
# CPU flags that decide which kernels torch, oneDNN and our C code can use
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info() -> dict:
    """Model name and the relevant flags of the first CPU in /proc/cpuinfo (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "flags": []}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", platform.machine()), "flags": [f for f in CPU_FLAGS if f in flags]}


def machine_info(device: torch.device | str = "cpu") -> dict:
    """Where a number was measured: CPU model and flags, cores, torch threads, torch, GPU."""
    device = torch.device(device)
    info = {"system": f"{platform.system()} {platform.machine()}", "cpu": cpu_info(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_text(info: dict) -> str:
    """One line, e.g. 'Linux x86_64, AMD EPYC 9R14 (avx2 avx512f avx512_bf16), 2 cores, 1 torch thread(s), torch 2.13.0'."""
    cpu = info["cpu"]
    flags = f" ({' '.join(cpu['flags'])})" if cpu["flags"] else ""
    gpu = f", {info['gpu']}" if "gpu" in info else ""
    return (f"{info['system']}, {cpu['model']}{flags}, {info['cores']} cores, {info['torch_threads']} torch thread(s), "
            f"torch {info['torch']}{gpu}")


ARGV: list[str] | None = None      # the suite's arguments, set by benchmarks/__main__.py


def command_line() -> str:
    """The command that is running, as someone would type it: `python -m benchmarks ...`."""
    return "python -m benchmarks " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if ARGV is None else ARGV))


def write_result(path: Path, data: dict, device: torch.device | str = "cpu") -> Path:
    """Write a result JSON with the machine and the command that produced it added."""
    info = machine_info(device)
    data = {"command": command_line(), "machine": machine_text(info), "machine_info": info,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), **data}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    print(f"wrote {path}")
    return path


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this benchmark process (default: leave torch's choice)."""
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(fn(), milliseconds), the device synchronized before and after."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, 1000 * (time.perf_counter() - t)


def spread(values: list[float]) -> dict:
    """Median and spread of repeated timings (ms)."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "iqr": q[2] - q[0],
            "n": len(values)}


def repeat(fn, device: torch.device, warmup: int, times: int) -> dict:
    """`warmup` untimed calls (their total reported as warmup_ms), then the spread of `times` timed calls."""
    t = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    warm = 1000 * (time.perf_counter() - t)
    return {**spread([timed(fn, device)[1] for _ in range(times)]), "warmup_ms": warm, "warmup": warmup}


@contextlib.contextmanager
def backend(name: str):
    """ECF_BACKEND=name for the calls inside (ops.py reads it at every call); restored after."""
    old = os.environ.get("ECF_BACKEND")
    os.environ["ECF_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ECF_BACKEND", None)
        else:
            os.environ["ECF_BACKEND"] = old


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None (with a message) when matplotlib
    is not installed: it is in the "bench" extra, and a plot is never required."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def rgb_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 pixels of an image file, through the library's own loader."""
    from ecf_engine.image import load_image
    return load_image(path)[0]


def test_image(width: int, height: int) -> np.ndarray:
    """A Kodak image (the package's sample without Kodak) tiled / cropped to width x height."""
    src = KODAK / "kodim23.png"
    rgb = rgb_image(src if src.exists() else SAMPLE)
    reps = (-(-height // rgb.shape[0]), -(-width // rgb.shape[1]), 1)
    return np.ascontiguousarray(np.tile(rgb, reps)[:height, :width])


def parse_size(text: str) -> tuple[int, int]:
    """'768x512' -> (768, 512)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"size {text!r} is not WIDTHxHEIGHT (e.g. 768x512)") from None
    if w < 1 or h < 1:
        raise SystemExit(f"size {text!r}: width and height must be positive")
    return w, h
