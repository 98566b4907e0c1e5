"""Decode (and encode) time of our `paper` preset against CompressAI's ELIC, side by side.

    python benchmarks/elic_compare.py [--repeat 3] [--threads 2] [--size 768x512] [--out PATH]
                                      [--elic-onednn-off] [--no-macs]

Both models get random weights (torch.manual_seed(0)): timing does not depend on the weight
values much, but the byte counts, and so bpp, mean nothing, and no quality is reported.
  ours: ECFModel(Config.from_name('paper')) in an Engine; encode(rgb) / decode(bits), with
        decode_with_stats() splitting decode into network and entropy coding (coding = the
        GMM -> integer tables and the range coder, as the engine counts it).
  ELIC: compressai.models.Elic2022Official (ELIC, He et al. 2022, CompressAI's port),
        update(force=True), compress(x) / decompress(strings, shape) under torch.no_grad().
        Coding = time inside its entropy models' compress/decompress (rANS, C++) and
        GaussianConditional.build_indexes; network = the rest. The input is padded to a
        multiple of 64 and the output cropped and turned into uint8 inside the timed region,
        as our engine does. Its streams are raw strings with no header (shape out of band).
Content: a Kodak image tiled / cropped to --size (speed.py's test_image). Both models run in
one process, interleaved within each repeat (ours enc, ours dec, ELIC enc, ELIC dec); one
warm-up encode+decode per model is reported separately, then the median and min/max of
--repeat runs. kMAC/px of one decode is counted with torch's FlopCounterMode (networks only;
skip with --no-macs). Last, it measures this machine's GEMM peak (float64, float32, int8) and
the lower bound it puts on our exact decode (fixed-point networks in float64, g_s in float32).
Writes benchmarks/results/elic-compare-cpu.json (or --out) and prints
a table.

Note: our engine runs its networks with oneDNN off (detmath.thread_invariant_kernels: streams
must not depend on the thread count, ~1.5x network cost); ELIC runs with PyTorch's defaults,
or with oneDNN off too under --elic-onednn-off.

Needs compressai, which is not in the project's requirements (it pins numpy<2 and pulls in
torchvision, torch-geometric, pandas, ...). What works in this venv:
    pip install --no-deps compressai==1.2.8 einops pytorch-msssim scipy pandas torch-geometric \\
        requests urllib3 idna certifi charset-normalizer xxhash psutil
compressai's top-level import reads torchvision.transforms only to fill a registry of names;
PyPI's Linux torchvision wheels are CUDA builds whose _C does not load against CPU torch, and
then `import torchvision` raises. When torchvision does not import, this script puts an empty
stand-in for it before importing compressai (so leave torchvision uninstalled, or install one
that matches torch). Without compressai the script says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import peak_rss_mb, summary, test_image  # noqa: E402

import ecf_engine  # noqa: E402
from ecf_engine.config import Config  # noqa: E402
from ecf_engine.detmath import thread_invariant_kernels  # noqa: E402
from ecf_engine.engine import Engine  # noqa: E402
from ecf_engine.evaluate import machine  # noqa: E402
from ecf_engine.model import ECFModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MISSING = 2


def import_elic():
    """-> (Elic2022Official class, compressai version, note about torchvision); exits with
    status 2 and a message when compressai is missing or does not import."""
    if importlib.util.find_spec("compressai") is None:
        print("compressai is not installed; see this script's docstring (--help) for the pip command.",
              file=sys.stderr)
        sys.exit(MISSING)
    note = None
    try:
        import torchvision.transforms  # noqa: F401
    except Exception as e:         # missing, or a CUDA build over CPU torch (RuntimeError from its _C)
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        tv = types.ModuleType("torchvision")
        tv.__path__ = []
        tv.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms
        note = f"torchvision stubbed (import failed: {type(e).__name__}: {str(e).splitlines()[0][:120]})"
    try:
        import compressai
        from compressai.models import Elic2022Official
    except ImportError as e:
        print(f"compressai is installed but does not import ({type(e).__name__}: {e}); see this script's "
              f"docstring (--help) for the dependencies it needs.", file=sys.stderr)
        sys.exit(MISSING)
    return Elic2022Official, getattr(compressai, "__version__", "?"), note


class CodingClock:
    """Accumulates the time spent inside CompressAI's entropy models (compress, decompress,
    build_indexes), by wrapping those methods on the model's instances."""

    def __init__(self, model: torch.nn.Module):
        from compressai.entropy_models import EntropyModel
        self.seconds = 0.0
        for mod in model.modules():
            if isinstance(mod, EntropyModel):
                for name in ("compress", "decompress", "build_indexes"):
                    if hasattr(mod, name):
                        setattr(mod, name, self._wrap(getattr(mod, name)))

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
        return timed

    @contextlib.contextmanager
    def measure(self, into: dict):
        self.seconds = 0.0
        yield
        into["coding_ms"] = 1000 * self.seconds


class Elic:
    def __init__(self, cls, onednn_off: bool = False):
        torch.manual_seed(0)
        self.model = cls().eval()
        self.model.update(force=True)
        self.clock = CodingClock(self.model)
        # the same kernel restriction as our engine (oneDNN off), or PyTorch's defaults
        self.kernels = thread_invariant_kernels if onednn_off else contextlib.nullcontext

    @torch.no_grad()
    def encode(self, rgb: np.ndarray, stats: dict) -> tuple[list, torch.Size, tuple[int, int]]:
        with self.kernels(), self.clock.measure(stats):
            x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(255)
            H, W = rgb.shape[:2]
            x = F.pad(x, (0, -W % 64, 0, -H % 64), mode="replicate")
            out = self.model.compress(x)
        return out["strings"], out["shape"], (H, W)

    @torch.no_grad()
    def decode(self, coded, stats: dict) -> np.ndarray:
        strings, shape, (H, W) = coded
        with self.kernels(), self.clock.measure(stats):
            x_hat = self.model.decompress(strings, shape)["x_hat"]
            img = (x_hat[0, :, :H, :W] * 255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return np.ascontiguousarray(img)


def source_state() -> str:
    """The commit of ecf_engine/ that ran, and whether it had uncommitted changes."""
    src = Path(ecf_engine.__file__).resolve().parent
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(src), *a], capture_output=True, text=True,
                                        check=True).stdout.strip()
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain", ".")
                                                      else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def n_bytes(strings) -> int:
    return len(strings) if isinstance(strings, bytes) else sum(n_bytes(s) for s in strings)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, 1000 * (time.perf_counter() - t)


def decode_kmac_per_px(fn, pixels: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 2 / pixels / 1000


def gemm_gmacs(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    """Best-of-`repeat` throughput of one n x n x n matrix product, GMAC/s: what this machine's
    BLAS reaches at its most favourable shape (int8: torch._int_mm, int32 accumulation)."""
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        a, b = (torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8) for _ in range(2))
        product = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        a, b = (torch.randn(n, n, generator=gen, dtype=dtype) for _ in range(2))
        product = lambda: a @ b  # noqa: E731
    product()
    best = min(timed(product)[1] for _ in range(repeat))
    return n ** 3 / best / 1e6


def exactness_bound(ours: Engine, bits: bytes, pixels: int, total: float | None, elic_decode_ms: float) -> dict:
    """How fast our decode could be on this CPU at best: the fixed-point networks' MACs at the
    float64 GEMM peak plus g_s's at the float32 peak (coding and everything else free).
    total: kMAC/px of one decode, if already counted."""
    if total is None:
        total = decode_kmac_per_px(lambda: ours.decode(bits), pixels)
    y_hat = ours.decode_with_stats(bits)[1]["y_hat"].float()
    with torch.no_grad(), thread_invariant_kernels():
        g_s = decode_kmac_per_px(lambda: ours.model.g_s(y_hat), pixels)   # as run: tiles and their halos
    fixed = total - g_s
    tile, ours.model.g_s.tile = ours.model.g_s.tile, None
    with torch.no_grad(), thread_invariant_kernels():
        g_s = decode_kmac_per_px(lambda: ours.model.g_s(y_hat), pixels)   # the architecture's count
    ours.model.g_s.tile = tile
    rates = {str(d).removeprefix("torch."): gemm_gmacs(d) for d in (torch.float64, torch.float32, torch.int8)}
    bound = pixels * (fixed / rates["float64"] + g_s / rates["float32"]) / 1e3
    return {"gemm_gmac_per_s": rates, "fixed_point_kmac_per_px": fixed, "g_s_kmac_per_px": g_s,
            "decode_lower_bound_ms": bound, "elic_decode_ms": elic_decode_ms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="768x512", help="WxH")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "elic-compare-cpu.json")
    p.add_argument("--elic-onednn-off", action="store_true",
                   help="run ELIC with oneDNN off too, as our engine runs (default: PyTorch's defaults)")
    p.add_argument("--no-macs", action="store_true", help="skip the FlopCounterMode decode pass")
    args = p.parse_args()
    elic_cls, cai_version, tv_note = import_elic()
    torch.set_num_threads(args.threads)
    width, height = map(int, args.size.lower().split("x"))
    rgb = test_image(width, height)
    pixels = width * height

    torch.manual_seed(0)
    ours = Engine(ECFModel(Config.from_name("paper")), model_id=b"\0" * 8, name="paper-random")
    elic = Elic(elic_cls, args.elic_onednn_off)

    # each: () -> (coded, stats) and coded -> (image, stats); stats carry coding_ms
    def ours_enc():
        return ours.encode_with_stats(rgb)

    def ours_dec(bits):
        return ours.decode_with_stats(bits)

    def elic_enc():
        st = {}
        return elic.encode(rgb, st), st

    def elic_dec(coded):
        st = {}
        return elic.decode(coded, st), st

    models = {"paper (ours)": (ours_enc, ours_dec, len),
              "ELIC (compressai)": (elic_enc, elic_dec, lambda c: n_bytes(c[0]))}
    rows = {}
    coded, first_image = {}, {}
    for name, (enc, dec, size_of) in models.items():
        (c, _), warm_enc = timed(enc)
        (img, _), warm_dec = timed(lambda: dec(c))
        coded[name], first_image[name] = c, img
        rows[name] = {"model": name, "bytes": size_of(c), "bpp": 8 * size_of(c) / pixels,
                      "warmup_encode_ms": warm_enc, "warmup_decode_ms": warm_dec,
                      "series": {k: [] for k in ("encode_ms", "encode_coding_ms", "decode_ms", "decode_coding_ms")},
                      "decode_repeatable": True}
    for _ in range(args.repeat):
        for name, (enc, dec, size_of) in models.items():
            s = rows[name]["series"]
            (c, st), ms = timed(enc)
            s["encode_ms"].append(ms)
            s["encode_coding_ms"].append(st["coding_ms"])
            (img, st), ms = timed(lambda: dec(c))
            s["decode_ms"].append(ms)
            s["decode_coding_ms"].append(st["coding_ms"])
            rows[name]["decode_repeatable"] &= bool(np.array_equal(img, first_image[name]))
    for r in rows.values():
        s = r.pop("series")
        s["encode_network_ms"] = [a - b for a, b in zip(s["encode_ms"], s["encode_coding_ms"])]
        s["decode_network_ms"] = [a - b for a, b in zip(s["decode_ms"], s["decode_coding_ms"])]
        r.update({k: summary(v) for k, v in s.items()})
    if not args.no_macs:
        name_o, name_e = models
        rows[name_o]["decode_kmac_per_px"] = decode_kmac_per_px(lambda: ours.decode(coded[name_o]), pixels)
        rows[name_e]["decode_kmac_per_px"] = decode_kmac_per_px(lambda: elic.decode(coded[name_e], {}), pixels)

    o, e = rows["paper (ours)"], rows["ELIC (compressai)"]
    ratio = o["decode_ms"]["median"] / e["decode_ms"]["median"]
    print(f"{args.size}, {args.threads} threads, median of {args.repeat} (min-max), ms; ELIC with oneDNN "
          f"{'off' if args.elic_onednn_off else 'on (PyTorch default)'}, ours with it off;\n{machine()}")
    print(f"{'model':<19}{'bytes*':>8}{'enc ms':>9}{'(coding)':>10}{'dec ms':>9}{'dec min-max':>14}"
          f"{'(network)':>11}{'(coding)':>10}{'warm-up dec':>13}{'dec kMAC/px':>13}")
    for name, r in rows.items():
        d = r["decode_ms"]
        kmac = f"{r['decode_kmac_per_px']:.0f}" if "decode_kmac_per_px" in r else "-"
        spread = f"{d['min']:.0f}-{d['max']:.0f}"
        print(f"{name:<19}{r['bytes']:>8}{r['encode_ms']['median']:>9.0f}{r['encode_coding_ms']['median']:>10.0f}"
              f"{d['median']:>9.0f}{spread:>14}"
              f"{r['decode_network_ms']['median']:>11.0f}{r['decode_coding_ms']['median']:>10.0f}"
              f"{r['warmup_decode_ms']:>13.0f}{kmac:>13}")
    verdict = "faster" if ratio < 1 else "slower"
    print(f"ecf_engine: {source_state()}; compressai {cai_version}")
    print(f"decode time ours / ELIC = {ratio:.3f} (median): paper preset decodes {verdict} than ELIC")
    print("* random weights for both models: byte counts (and bpp) are meaningless, only times count")
    if tv_note:
        print(f"note: {tv_note}")
    if not all(r["decode_repeatable"] for r in rows.values()):
        print("WARNING: some decode gave a different image on a later repeat")
    bound = exactness_bound(ours, coded["paper (ours)"], pixels, o.get("decode_kmac_per_px"), e["decode_ms"]["median"])
    r = bound["gemm_gmac_per_s"]
    print(f"GEMM peak here (2048^3, GMAC/s): float64 {r['float64']:.0f}, float32 {r['float32']:.0f}, "
          f"int8 {r['int8']:.0f}. Our exact decode needs {bound['fixed_point_kmac_per_px']:.0f} kMAC/px in "
          f"float64 and {bound['g_s_kmac_per_px']:.0f} (g_s) in float32: at least "
          f"{bound['decode_lower_bound_ms']:.0f} ms at those peaks, against ELIC's measured "
          f"{bound['elic_decode_ms']:.0f} ms")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": machine(), "threads": args.threads, "size": args.size, "repeat": args.repeat,
        "ecf_engine_source": source_state(), "compressai": cai_version, "torchvision_note": tv_note, "elic_onednn_off": args.elic_onednn_off,
        "decode_ratio_ours_over_elic": ratio,
        "note": "random weights (torch.manual_seed(0)) for both models: bytes/bpp are meaningless. "
                "Medians over `repeat` runs after one warm-up run, the two models interleaved in one "
                "process. coding_ms: ours = integer tables + range coder (engine stats); ELIC = time inside "
                "its entropy models' compress/decompress/build_indexes. network_ms = total - coding_ms. "
                "Our engine runs with oneDNN off (thread-invariant kernels); ELIC with PyTorch's defaults "
                "unless elic_onednn_off. "
                "decode_kmac_per_px: FlopCounterMode over one decode (networks only).",
        "peak_rss_mb": peak_rss_mb(), "rows": list(rows.values()), "exactness_bound": bound}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
