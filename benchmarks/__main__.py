"""ecf_engine's benchmarks, one command each; every one states the machine, synchronizes
the device and reports warm-up apart, and writes its results under benchmarks/results/.

    python -m benchmarks rd           rate-distortion on Kodak against classical codecs and VTM
    python -m benchmarks compare      candidate weights against the shipped ones at equal rate
    python -m benchmarks speed        encode / decode time by stage and size (--scaling: vs pixels)
    python -m benchmarks complexity   kMAC/px per component (--ladder: the optimization ladder)
    python -m benchmarks formats      rate and decode time of the y coding formats
    python -m benchmarks kernels      ops vs references, rANS throughput, kernel mismatch, registers
    python -m benchmarks exact        bit-exactness through the CLI and across devices
    python -m benchmarks rate         --bpp / --psnr targets of a variable-rate model, per image
    python -m benchmarks ceiling      PSNR of g_s(g_a(x)) unquantized: where the transforms cap quality
    python -m benchmarks train        training throughput (benchmarks/train_throughput.py)
    python -m benchmarks gpu          the one-call GPU run (benchmarks/gpu_session.sh)
    python -m benchmarks threads      time by thread setting, quiet and loaded (benchmarks/threads.py)
    python -m benchmarks all          the CPU suite without rd: complexity, speed, kernels (long)

`python -m benchmarks COMMAND --help` for each command's options.
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

from . import harness

COMMANDS = {           # command -> (module, one line)
    "rd": ("rd", "rate-distortion on Kodak against classical codecs and VTM, BD-rates"),
    "compare": ("compare_rd", "candidate weights against the shipped ones at equal rate"),
    "speed": ("speed", "encode / decode time per image by stage and size; --scaling: against pixels"),
    "complexity": ("complexity", "kMAC/px per component; --ladder: the optimization ladder, counted and timed"),
    "formats": ("formats", "rate and decode time of the y coding formats, fixed-point cost"),
    "kernels": ("kernels", "ops vs their references, rANS throughput, kernel mismatch, kernel registers"),
    "exact": ("exact", "bit-exactness through the CLI on other thread counts, and across devices"),
    "rate": ("rate_control", "rate control: --bpp / --psnr targets met on every image"),
    "ceiling": ("ceiling", "PSNR of the transforms with no quantization: what more rate could buy"),
}
EXTERNAL = {           # commands that run a script of their own, arguments passed through
    "train": ([sys.executable, str(harness.ROOT / "benchmarks" / "train_throughput.py")],
              "training throughput, old path against bf16 / DDP"),
    "gpu": (["bash", str(harness.ROOT / "benchmarks" / "gpu_session.sh")],
            "the one-call GPU run: CUDA tests, cross-device exactness, kernel timings, training"),
    "threads": ([sys.executable, str(harness.ROOT / "benchmarks" / "threads.py")],
                "encode / decode time by thread setting, on a quiet and on a loaded machine"),
}
# `all`: the CPU suite without rd (that one is long and has its own command)
SUITE = [["complexity"], ["complexity", "--ladder"], ["speed"], ["speed", "--scaling"], ["kernels", "ops"],
         ["kernels", "rans"]]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, about) in COMMANDS.items():
        mod = importlib.import_module(f"benchmarks.{module}")
        s = sub.add_parser(name, help=about, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(s)
        s.set_defaults(run=mod.run)
    for name, (_, about) in EXTERNAL.items():
        sub.add_parser(name, help=about + " (arguments go to the script; `--help` there)")
    sub.add_parser("all", help="the CPU suite without rd: " + "; ".join(" ".join(c) for c in SUITE))
    return p


def external(name: str, args: list[str]) -> int:
    cmd, _ = EXTERNAL[name]
    if not Path(cmd[-1]).is_file():
        print(f"{cmd[-1]} is not there in this checkout", file=sys.stderr)
        return 2
    return subprocess.call(cmd + args, cwd=harness.ROOT)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTERNAL:
        return external(argv[0], argv[1:])
    if argv and argv[0] == "all":
        if argv[1:]:
            print("`all` takes no options: run the commands one by one to set them", file=sys.stderr)
            return 2
        status = 0
        for command in SUITE:
            print(f"== python -m benchmarks {' '.join(command)}", flush=True)
            status |= main(command) != 0
        return status
    args = parser().parse_args(argv)
    harness.ARGV = argv
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
