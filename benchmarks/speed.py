"""Encode / decode time per image, split into network and entropy coding (decode also into
h_s, the 7 context-model steps, g_s and the rest), plus peak memory; or, with --scaling,
decode time against pixel count from 256x256 to 4K.

    python -m benchmarks speed [--models default] [--sizes 768x512 1920x1080 3840x2160]
                               [--repeat 5] [--threads N] [--device cpu|cuda] [--quality Q]
    python -m benchmarks speed --scaling [--models default] [--repeat 3]

Content: a Kodak image tiled / cropped to each size (timing depends a little on content
through the entropy coder). One warm-up encode+decode per (model, size) is reported
separately; then the median and spread of --repeat runs, the device synchronized around
each. Writes benchmarks/results/speed-<device>.{json,png} (bars: encode / decode split into
network and coding), or scaling-<device>.{json,png} (log-log decode time vs pixels). The
paper reports that a 4K image (21x Kodak's pixels) takes only ~14x Kodak's time on its GPU.
"""
from __future__ import annotations

import resource
import textwrap
from pathlib import Path

import torch

from .harness import RESULTS, machine_info, machine_text, parse_size, pyplot, set_threads, spread, test_image, \
    timed, write_result

SIZES = ["768x512", "1920x1080", "3840x2160"]
SCALING_SIZES = ["256x256", "512x512", "768x512", "1280x720", "1920x1080", "2560x1440", "3840x2160"]
KODAK_PIXELS = 768 * 512
DECODE_PARTS = ("hyper", "context", "synthesis", "other")     # decode_with_stats' split besides coding


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(engine, width: int, height: int, repeat: int, quality: float | None = None) -> dict:
    """One model at one size: warm-up encode + decode, then `repeat` timed ones."""
    device = engine.device
    rgb = test_image(width, height)
    rate = {} if quality is None else {"quality": quality}
    (bits, _), warm_enc = timed(lambda: engine.encode_with_stats(rgb, **rate), device)
    _, warm_dec = timed(lambda: engine.decode_with_stats(bits), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = {"encode_ms": [], "encode_coding_ms": [], "decode_ms": [], "decode_coding_ms": []}
    rows.update({f"decode_{part}_ms": [] for part in DECODE_PARTS})
    for _ in range(repeat):
        (bits, enc), ms = timed(lambda: engine.encode_with_stats(rgb, **rate), device)
        rows["encode_ms"].append(ms)
        rows["encode_coding_ms"].append(enc["coding_ms"])
        (_, dec), ms = timed(lambda: engine.decode_with_stats(bits), device)
        rows["decode_ms"].append(ms)
        rows["decode_coding_ms"].append(dec["coding_ms"])
        for part in DECODE_PARTS:
            rows[f"decode_{part}_ms"].append(dec[f"{part}_ms"])
    rows["encode_network_ms"] = [a - b for a, b in zip(rows["encode_ms"], rows["encode_coding_ms"])]
    rows["decode_network_ms"] = [a - b for a, b in zip(rows["decode_ms"], rows["decode_coding_ms"])]
    return {"model": engine.name, "quality": enc.get("quality"), "size": f"{width}x{height}", "pixels": width * height,
            "bytes": len(bits), "bpp": 8 * len(bits) / (width * height),
            "warmup_encode_ms": warm_enc, "warmup_decode_ms": warm_dec,
            **{k: spread(v) for k, v in rows.items()},
            "peak_rss_mb_so_far": peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None}


def plot_bars(rows: list[dict], title: str, path: Path) -> None:
    """Median encode and decode time per model, one panel per size, each bar split into
    network and entropy coding."""
    plt = pyplot()
    if plt is None:
        return
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(6, 3.2 * len(sizes)), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        mine = {r["model"]: r for r in rows if r["size"] == size}
        for offset, what, color in ((-0.2, "encode", "tab:blue"), (0.2, "decode", "tab:orange")):
            pos = [i + offset for i, m in enumerate(models) if m in mine]
            net = [mine[m][f"{what}_network_ms"]["median"] for m in models if m in mine]
            coding = [mine[m][f"{what}_coding_ms"]["median"] for m in models if m in mine]
            ax.bar(pos, net, 0.38, color=color, label=f"{what}: network")
            ax.bar(pos, coding, 0.38, bottom=net, color=color, alpha=0.45, hatch="//",
                   label=f"{what}: entropy coding")
        ax.set_xticks(range(len(models)), models, fontsize=8)
        ax.set_title(size, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("median ms per image")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def plot_scaling(rows: list[dict], title: str, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        px = [r["pixels"] / 1e6 for r in mine]
        ms = [r["decode_ms"]["median"] for r in mine]
        ax.loglog(px, ms, "o-", label=f"{model}: decode, measured")
        kodak = next((r for r in mine if r["pixels"] == KODAK_PIXELS), None)
        if kodak:
            ax.loglog(px, [kodak["decode_ms"]["median"] * p / (KODAK_PIXELS / 1e6) for p in px], "--", color="gray",
                      label="linear in pixels (from Kodak)")
        for r, x, y in zip(mine, px, ms):
            ax.annotate(r["size"], (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(plt.NullFormatter())      # decade labels only
    ax.set_xlabel("megapixels")
    ax.set_ylabel("decode time [ms]")
    ax.set_title(title, fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def add_arguments(p) -> None:
    p.add_argument("--models", nargs="+", default=["default"], help="shipped names, .safetensors paths or presets")
    p.add_argument("--sizes", nargs="+", help=f"WIDTHxHEIGHT (default: {' '.join(SIZES)}; "
                   f"with --scaling: {' '.join(SCALING_SIZES)})")
    p.add_argument("--scaling", action="store_true", help="decode time against pixel count (scaling-<device>.*)")
    p.add_argument("--quality", type=float, help="quality of a variable-rate model (default: its default)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", type=Path, help="output prefix (default benchmarks/results/speed-<device> or scaling-<device>)")


def run(args) -> int:
    import ecf_engine
    set_threads(args.threads)
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here")
    device = torch.device(args.device)
    sizes = [parse_size(s) for s in (args.sizes or (SCALING_SIZES if args.scaling else SIZES))]
    where = machine_text(machine_info(device))
    print(f"{where}; medians of {args.repeat} after one warm-up")
    print(f"{'model':<16}{'size':>11}{'bpp':>8}{'enc ms':>10}{'(coding)':>10}{'dec ms':>10}{'(coding)':>10}"
          f"{'h_s':>7}{'context':>9}{'g_s':>7}{'other':>7}{'warm-up dec':>13}{'peak RSS MB':>13}")
    rows = []
    for name in args.models:
        engine = ecf_engine.load(name, device=device)
        quality = args.quality if engine.variable_rate else None
        for w, h in sizes:
            r = bench(engine, w, h, args.repeat, quality)
            rows.append(r)
            print(f"{name:<16}{r['size']:>11}{r['bpp']:>8.3f}{r['encode_ms']['median']:>10.0f}"
                  f"{r['encode_coding_ms']['median']:>10.0f}{r['decode_ms']['median']:>10.0f}"
                  f"{r['decode_coding_ms']['median']:>10.0f}"
                  + "".join(f"{r[f'decode_{part}_ms']['median']:>{w}.0f}" for part, w in zip(DECODE_PARTS, (7, 9, 7, 7)))
                  + f"{r['warmup_decode_ms']:>13.0f}{r['peak_rss_mb_so_far']:>13.0f}")
    for r in rows:
        kodak = next((k for k in rows if k["model"] == r["model"] and k["pixels"] == KODAK_PIXELS), None)
        r["pixel_ratio_to_kodak"] = r["pixels"] / KODAK_PIXELS
        r["time_ratio_to_kodak"] = r["decode_ms"]["median"] / kodak["decode_ms"]["median"] if kodak else None
    if args.scaling:
        print(f"\n{'model':<16}{'size':>11}{'x Kodak px':>12}{'decode ms':>11}{'x Kodak time':>14}")
        for r in rows:
            ratio = "—" if r["time_ratio_to_kodak"] is None else f"{r['time_ratio_to_kodak']:.2f}"
            print(f"{r['model']:<16}{r['size']:>11}{r['pixel_ratio_to_kodak']:>12.2f}{r['decode_ms']['median']:>11.0f}"
                  f"{ratio:>14}")
    prefix = args.out or RESULTS / f"{'scaling' if args.scaling else 'speed'}-{device.type}"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    write_result(prefix.with_name(prefix.name + ".json"),
                 {"device": str(device), "gpu": gpu, "repeat": args.repeat, "threads": torch.get_num_threads(),
                  "note": "medians over `repeat` runs after one warm-up run (warmup_*_ms); peak RSS is the "
                          "process high-water mark up to that row", "rows": rows}, device)
    title = f"ecf_engine: {'decode time vs. size' if args.scaling else 'encode / decode time'}\n" + \
        textwrap.fill(where, 80)
    (plot_scaling if args.scaling else plot_bars)(rows, title, prefix.with_name(prefix.name + ".png"))
    return 0
