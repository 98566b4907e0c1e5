"""The `ecf` command: encode, decode, info, eval, demo, train.

Conventions (those of cwebp, avifenc, cjxl, ffmpeg):
* nothing that exists is overwritten without -f/--force, and outputs are written to a
  temporary file in the same folder and renamed into place, so an interrupted run leaves
  no half-written file; default names cannot collide with the input (x.png -> x.ecf,
  x.ecf -> x.decoded.png); every output path is checked before any work starts;
* `-` is stdin or stdout; several files or folders (-r: with subfolders) go to -o FOLDER,
  with a progress bar and a summary line on stderr; an unreadable file in a batch is
  skipped with a warning and makes the exit status 1;
* errors are one line on stderr and a non-zero exit; -v/--verbose adds the traceback.

This module imports nothing heavy at load time: `ecf --version` and argument errors do not
wait for torch. As the process entry point it may set the OpenMP environment before torch
loads (see setup_threads); the library itself never does.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import threading
import time
from pathlib import Path

SAMPLE = Path(__file__).parent / "data" / "sample.png"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pnm", ".tif", ".tiff", ".webp", ".gif"}
STREAM_SUFFIX = ".ecf"
# decode writes lossless formats only: the reconstruction is the codec's result, a JPEG of it is not
DECODE_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".ppm": "PPM", ".pgm": "PPM"}
IDLE_WINDOW_S = 0.05                    # how long the default thread count samples the cores' load


class CLIError(Exception):
    """A usage or file problem found by the command line (one line, exit status 1)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):               # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


# -- threads ----------------------------------------------------------------------------------

def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:                  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def idle_cores(window: float = IDLE_WINDOW_S) -> float | None:
    """Sum of the idle fractions of the cores this process may run on, measured over
    `window` seconds from /proc/stat (None where that is not available). An instantaneous
    measure: the load average lags a job that just started by a minute."""
    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    except AttributeError:
        return None

    def sample():
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name in cpus:
                    ticks = [int(v) for v in fields[:8]]
                    out[name] = (ticks[3] + ticks[4], sum(ticks))       # (idle + iowait, all)
        return out
    try:
        a = sample()
        time.sleep(window)
        b = sample()
    except (OSError, ValueError, IndexError):
        return None
    idle = 0.0
    for cpu, (idle_b, total_b) in b.items():
        idle_a, total_a = a.get(cpu, (idle_b, total_b))
        idle += (idle_b - idle_a) / (total_b - total_a) if total_b > total_a else 1.0
    return idle if b else None


def default_threads() -> int:
    """The cores this process may run on that no other job keeps busy right now (at least 1).
    More threads than free cores is what makes a busy machine slow: OpenMP's workers wait
    for each other at every barrier, and one that shares a core with another job waits for
    that job's time slice."""
    cores = available_cores()
    if cores == 1:
        return 1
    idle = idle_cores()
    if idle is None:
        try:
            idle = cores - os.getloadavg()[0]
        except OSError:
            return cores
    return max(1, min(cores, math.floor(idle + 0.5)))


def thread_count(requested: int | None) -> int:
    """--threads N (at most the cores available), else OMP_NUM_THREADS, else default_threads()."""
    cores = available_cores()
    if requested is not None:
        if requested > cores:
            print(f"ecf: warning: --threads {requested} lowered to the {cores} cores this process may run on",
                  file=sys.stderr)
        return min(requested, cores)
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return default_threads()


def setup_threads(requested: int | None) -> int:
    """Thread count and OpenMP wait policy for this process; returns the count. Before torch is
    imported (the `ecf` process) it sets OMP_WAIT_POLICY=PASSIVE unless the user chose one:
    idle workers sleep instead of spinning, so they neither take a core from another job nor
    lose their own time slice to one."""
    n = thread_count(requested)
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")   # MKL's GEMM path fixed on any thread count (detmath)
        os.environ["OMP_NUM_THREADS"] = str(n)
    import torch
    torch.set_num_threads(n)
    return n


# -- paths and files ---------------------------------------------------------------------------

def _expand(inputs: list[str], suffixes, recursive: bool, what: str) -> list[tuple[object, Path | None]]:
    """(source, path relative to its folder or None) for each input file, folder entry or '-'."""
    sources = []
    for name in inputs:
        if name == "-":
            sources.append(("-", None))
            continue
        p = Path(name)
        if p.is_dir():
            found = sorted(f for f in (p.rglob("*") if recursive else p.iterdir())
                           if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise CLIError(f"{p}: no {what} files in this folder" + ("" if recursive else " (-r: with subfolders)"))
            sources += [(f, f.relative_to(p)) for f in found]
        elif p.is_file():
            sources.append((p, None))
        elif p.exists():
            raise CLIError(f"{p}: not a regular file")
        else:
            raise CLIError(f"{p}: no such file or folder")
    if len(sources) > 1 and any(s == "-" for s, _ in sources):
        raise CLIError("- (stdin) must be the only input")
    return sources


def plan(inputs: list[str], output: str | None, recursive: bool, force: bool, suffixes, what: str,
         default_name, check_output) -> list[tuple[object, object]]:
    """(source, destination) pairs, every destination validated before any work:
    extension (check_output), folder, no two inputs to one output, nothing existing
    overwritten without force, no input overwritten at all."""
    sources = _expand(inputs, suffixes, recursive, what)
    several = len(sources) > 1 or any(Path(i).is_dir() for i in inputs if i != "-")
    to_folder = output is not None and output != "-" and (several or Path(output).is_dir() or output.endswith(os.sep))
    if output == "-" and several:
        raise CLIError("-o - (stdout) takes one input")
    if to_folder:
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise CLIError(f"-o {folder}: not a folder (several inputs are written into a folder)")
        if not folder.exists() and not folder.parent.is_dir():
            raise CLIError(f"-o {folder}: its parent folder {folder.parent} does not exist")
    jobs = []
    for src, rel in sources:
        if output == "-" or (src == "-" and output is None):
            if sys.stdout.isatty():
                raise CLIError("refusing to write binary data to a terminal: use -o FILE or redirect stdout")
            jobs.append((src, "-"))
        elif to_folder:
            if src == "-":
                raise CLIError("stdin has no file name: give -o FILE, not a folder")
            jobs.append((src, Path(output) / (rel.parent if rel else "") / default_name(src)))
        elif output is not None:
            jobs.append((src, Path(output)))
        else:
            jobs.append((src, src.with_name(default_name(src))))
    seen: dict[Path, object] = {}
    for src, dst in jobs:
        if dst == "-":
            continue
        check_output(dst)
        key = dst.resolve()
        if key in seen:
            raise CLIError(f"{seen[key]} and {src} would both be written to {dst}: "
                           "give them distinct names or encode them separately with -o")
        seen[key] = src
        if src != "-" and key == Path(src).resolve():
            raise CLIError(f"{dst}: the output would replace its input")
        if dst.exists() and not force:
            raise CLIError(f"{dst} exists (-f/--force to overwrite)")
        if dst.exists() and dst.is_dir():
            raise CLIError(f"{dst} is a folder")
        parent = dst.parent
        if not to_folder and not parent.is_dir():
            raise CLIError(f"output folder {parent} does not exist")
    if to_folder:
        Path(output).mkdir(exist_ok=True)
    for folder in {dst.parent for _, dst in jobs if dst != "-"}:
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise CLIError(f"output folder {folder} is not writable")
    return jobs


def write_atomic(path: Path, data: bytes, force: bool) -> None:
    """Write data to path through a temporary file in the same folder, then rename it into
    place: readers never see a partial file. Without force an existing file is never
    replaced, even one created since the checks (hard link: fails if the name exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise CLIError(f"{path} exists (-f/--force to overwrite)") from None
        except OSError:                     # a file system without hard links
            if path.exists():
                raise CLIError(f"{path} exists (-f/--force to overwrite)") from None
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(dst, data: bytes, force: bool) -> None:
    if dst == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(dst, data, force)


def _read(src) -> bytes:
    return sys.stdin.buffer.read() if src == "-" else Path(src).read_bytes()


def _name(src) -> str:
    return "stdin" if src == "-" else str(src)


def _check_stream_name(dst: Path) -> None:
    if dst.suffix.lower() != STREAM_SUFFIX:
        raise CLIError(f"{dst}: an encoded image is written as {STREAM_SUFFIX} (or -o - for stdout)")


def _check_image_name(dst: Path) -> None:
    if dst.suffix.lower() not in DECODE_FORMATS:
        raise CLIError(f"{dst}: decode writes lossless images: {', '.join(sorted(DECODE_FORMATS))} "
                       "(or -o - for PNG on stdout)")


class Spinner:
    """'label 12 s' on stderr, refreshed twice a second while a long step runs (terminals only).
    The engine reports no progress from inside one encode; elapsed time is what can be shown."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled and sys.stderr.isatty()
        self.done = threading.Event()

    def _run(self):
        t0 = time.perf_counter()
        while not self.done.wait(0.5):
            print(f"\r{self.label} {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
        print("\r\033[K", end="", file=sys.stderr, flush=True)

    def __enter__(self):
        if self.enabled:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.done.set()
            self.thread.join()


def _batch(jobs, command: str, work, summary) -> int:
    """Run work(src, dst) -> status line over jobs. One job: errors propagate. Several: a
    progress bar, an unreadable input is skipped with a warning, and the exit status is 1 if
    any was; summary(ok, failed, seconds) -> the closing line."""
    from tqdm import tqdm
    from .errors import ECFError
    if len(jobs) == 1:
        print(work(*jobs[0]), file=sys.stderr)
        return 0
    t0, failed = time.perf_counter(), 0
    bar = tqdm(jobs, desc=command, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)
    for src, dst in bar:
        try:
            bar.write(work(src, dst), file=sys.stderr)
        except (ECFError, OSError, CLIError) as e:
            failed += 1
            bar.write(skip_message(command, src, e), file=sys.stderr)
    print(summary(len(jobs) - failed, failed, time.perf_counter() - t0), file=sys.stderr)
    return 1 if failed else 0


def skip_message(command: str, src, error: Exception) -> str:
    """The one wording every batch command warns with."""
    message = str(error)
    if isinstance(error, OSError) and error.strerror:
        message = error.strerror
    if not message.startswith(_name(src)):
        message = f"{_name(src)}: {message}"
    return f"ecf {command}: warning: skipped {message}"


# -- models -----------------------------------------------------------------------------------

def shipped_names() -> list[str]:
    from .weights import MODELS, SHIPPED
    return sorted(SHIPPED) + [m.name for m in MODELS.values() if m.status == "shipped"]


def _check_model_name(name: str) -> None:
    from .config import PRESETS
    from .weights import MODELS, SHIPPED
    if name in SHIPPED or name in MODELS or name in PRESETS or Path(name).is_file():
        return
    if name.endswith(".safetensors"):
        raise CLIError(f"--model {name}: no such weights file")
    raise CLIError(f"--model {name}: no such model; shipped models: {', '.join(shipped_names())} "
                   "(or give a .safetensors weights file)")


def _load(name: str, max_pixels: int | None):
    import ecf_engine
    from .engine import DEFAULT_MAX_PIXELS
    return ecf_engine.load(name, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)


def pick_engine(args):
    """(engine, rate keywords for encode) from --model, -q, --lmbda, --bpp, --psnr, all
    checked before any image is coded. The rate options need a variable-rate model (the
    default is one)."""
    from .config import check_quality, quality_of_lambda
    name = args.model or "default"
    _check_model_name(name)
    engine = _load(name, getattr(args, "max_pixels", None))
    rate = {k: getattr(args, a, None) for k, a in (("quality", "quality"), ("lmbda", "lmbda"),
                                                  ("target_bpp", "bpp"), ("target_psnr", "psnr"))}
    rate = {k: v for k, v in rate.items() if v is not None}
    option = {"quality": "-q", "lmbda": "--lmbda", "target_bpp": "--bpp", "target_psnr": "--psnr"}
    if rate and not engine.variable_rate:
        raise CLIError(f"{option[next(iter(rate))]} needs a variable-rate --model: "
                       f"{args.model or 'the default model'} has a fixed rate")
    try:
        if "quality" in rate:
            check_quality(rate["quality"])
            if rate["quality"] > engine.cfg.rates:
                raise ValueError(f"quality must be in [1, {engine.cfg.rates}], got {rate['quality']:g}")
        if "lmbda" in rate:
            quality_of_lambda(rate["lmbda"])
    except ValueError as e:
        raise CLIError(f"{option[next(iter(rate))]}: {e}") from None
    return engine, rate


def _number(lo: float, hi: float, lo_open: bool = False):
    """argparse type: a finite float in [lo, hi] ((lo, hi] with lo_open)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if v < lo or v > hi or (lo_open and v == lo):
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return v
    return parse


def _count(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{text} is below {lo}")
        return v
    return parse


# -- commands ---------------------------------------------------------------------------------

def cmd_encode(args) -> int:
    jobs = plan(args.input, args.output, args.recursive, args.force, IMAGE_SUFFIXES, "image",
                lambda src: Path(src).stem + STREAM_SUFFIX, _check_stream_name)
    engine, rate = pick_engine(args)
    totals = {"bytes": 0, "pixels": 0}

    def work(src, dst) -> str:
        from PIL import Image, UnidentifiedImageError
        from .errors import ImageError
        try:
            image = Image.open(io.BytesIO(_read(src)) if src == "-" else src)
        except UnidentifiedImageError:
            raise ImageError(f"{_name(src)}: not an image file Pillow can read") from None
        with image:
            W, H = image.size
            if W * H > engine.max_pixels:
                raise ImageError(f"{_name(src)}: {W}x{H} pixels, above the limit of {engine.max_pixels} "
                                 "(--max-pixels N raises it)")
            with Spinner(f"rdo {_name(src)}", args.rdo > 0):
                bits, stats = engine.encode_with_stats(image, rdo_iters=args.rdo, **rate)
        _write(dst, bits, args.force)
        totals["bytes"] += len(bits)
        totals["pixels"] += W * H
        q = f", quality {stats['quality']:.3f}" if stats.get("quality") is not None else ""
        return (f"{_name(src)} -> {'stdout' if dst == '-' else dst}: {len(bits)} bytes, {stats['bpp']:.4f} bpp"
                f"{q}, {stats['encode_ms']:.0f} ms")

    def summary(ok, failed, seconds):
        bpp = 8 * totals["bytes"] / totals["pixels"] if totals["pixels"] else 0.0
        return (f"encoded {ok} of {ok + failed} images ({failed} skipped): {totals['bytes']} bytes, "
                f"{bpp:.4f} bpp over all pixels, {seconds:.1f} s")
    return _batch(jobs, "encode", work, summary)


def _decoder(args):
    """header -> the engine to decode it with (shipped models by id, or --model), with a
    message for a CLI user when the stream's model is not at hand."""
    from .weights import missing_model_message, shipped_models
    engines = {}
    if args.model is not None:
        _check_model_name(args.model)
        engines["given"] = _load(args.model, args.max_pixels)

    def engine_for(header, src):
        if args.model is not None:
            engine = engines["given"]
            if header.model_id != engine.model_id:
                raise CLIError(f"{_name(src)}: coded with model {header.model_id.hex()}, but --model {args.model} "
                               f"is {engine.model_id.hex()}; give the stream's model with --model, or no --model "
                               "for a shipped one")
            return engine
        if header.model_id not in engines:
            path = shipped_models().get(header.model_id)
            if path is None:
                raise CLIError(f"{_name(src)}: {missing_model_message(header.model_id, cli=True)}")
            engines[header.model_id] = _load(path, args.max_pixels)
        return engines[header.model_id]
    return engine_for


def cmd_decode(args) -> int:
    from .bitstream import read_header
    from .engine import to_pil
    jobs = plan(args.input, args.output, args.recursive, args.force, {STREAM_SUFFIX}, STREAM_SUFFIX,
                lambda src: Path(src).stem + ".decoded.png", _check_image_name)
    engine_for = _decoder(args)

    def work(src, dst) -> str:
        bits = _read(src)
        t = time.perf_counter()
        header = read_header(bits)
        engine = engine_for(header, src)
        metadata = dict(header.metadata)
        if args.mode:
            metadata["mode"] = args.mode
        image = to_pil(engine.decode(bits), metadata)    # grayscale if the source was, unless --mode
        ms = 1000 * (time.perf_counter() - t)
        keep = {k: image.info[k] for k in ("icc_profile", "exif") if image.info.get(k)}
        buf = io.BytesIO()
        image.save(buf, format="PNG" if dst == "-" else DECODE_FORMATS[dst.suffix.lower()], **keep)
        _write(dst, buf.getvalue(), args.force)
        kept = f", kept {' and '.join(k.replace('_', ' ') for k in keep)}" if keep else ""
        return (f"{_name(src)} -> {'stdout' if dst == '-' else dst}: {image.width}x{image.height} {image.mode}"
                f"{kept}, {ms:.0f} ms")

    def summary(ok, failed, seconds):
        return f"decoded {ok} of {ok + failed} streams ({failed} skipped), {seconds:.1f} s"
    return _batch(jobs, "decode", work, summary)


def cmd_info(args) -> int:
    import json
    from . import bitstream
    from .weights import retired_model, shipped_models
    bits = _read(args.input)
    header = bitstream.read_header(bits)             # a bad header: an error, nothing to show
    info = header.describe()
    path = shipped_models().get(header.model_id)
    old = None if path else retired_model(header.model_id)
    info["model"] = (path.stem if path else f"{old['name']} (no longer shipped)" if old
                     else "not a shipped model (decode with --model FILE.safetensors)")
    if header.version >= 3:                          # rANS substreams: bands of latent rows
        from .engine import _padded
        from .model import PAD
        from .rans import substream_count
        info["y_substreams"] = substream_count(_padded(header.height, header.width)[0] * 4 // PAD)
    try:
        bitstream.unpack(bits)                       # lengths and CRC-32
        info["check"] = "ok (lengths and CRC-32 match)"
        damage = None
    except bitstream.BitstreamError as e:
        damage = str(e)
        info["check"] = f"damaged: {damage}"
    print(json.dumps(info, indent=2))
    if damage:
        raise CLIError(f"{_name(args.input)}: {damage}")
    return 0


def cmd_eval(args) -> int:
    import json
    from .evaluate import evaluate, format_table
    if args.json:
        out = Path(args.json)
        if out.exists() and not args.force:
            raise CLIError(f"{out} exists (-f/--force to overwrite)")
        if not out.parent.is_dir():
            raise CLIError(f"output folder {out.parent} does not exist")
    files = [src for src, _ in _expand(args.folder, IMAGE_SUFFIXES, args.recursive, "image") if src != "-"]
    engine, rate = pick_engine(args)
    from tqdm import tqdm
    result = evaluate(engine, files, limit=args.limit, rdo_iters=args.rdo, encode_options=rate,
                      progress=sys.stderr.isatty(),
                      on_skip=lambda path, e: tqdm.write(skip_message("eval", path, e), file=sys.stderr))
    print(format_table(result))
    if args.json:
        write_atomic(Path(args.json), json.dumps(result, indent=2).encode(), args.force)
        print(f"wrote {args.json}")
    if result["skipped"]:
        print(f"ecf eval: {len(result['skipped'])} of {len(result['skipped']) + result['images']} images skipped",
              file=sys.stderr)
        return 1
    return 0


def cmd_demo(args) -> int:
    import numpy as np
    from .image import load_image
    from .metrics import psnr
    if args.output:
        plan([str(args.image)], args.output, False, args.force, IMAGE_SUFFIXES, "image", None, _check_image_name)
    engine, rate = pick_engine(args)
    image = load_image(args.image)[0]
    H, W = image.shape[:2]
    engine.encode(image, **rate)                   # warm-up: first call pays one-time setup
    t = time.perf_counter()
    bits, enc = engine.encode_with_stats(image, **rate)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    out, dec = engine.decode_with_stats(bits)
    t_dec = time.perf_counter() - t
    cfg = engine.cfg
    from .config import lambda_of_quality
    rate = (f"variable rate, quality {enc['quality']:g} (lambda {lambda_of_quality(enc['quality']):g})"
            if engine.variable_rate else f"lambda={cfg.lmbda}")
    print(f"model      {engine.name} (id {engine.model_id.hex()}): N={cfg.N} M={cfg.M} N_cs={cfg.N_cs} "
          f"K={cfg.K} L={cfg.L} d_e={cfg.d_e}, {rate}")
    shown = Path(args.image).resolve()
    print(f"image      {shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown} ({W}x{H})")
    print(f"size       {len(bits)} bytes = {8 * len(bits) / (H * W):.4f} bpp (float model's estimate "
          f"{enc['estimated_bits'] / (H * W):.4f} bpp; coder vs its integer tables {enc['coder_overhead_percent']:+.2f} %)")
    print(f"PSNR       {psnr(image, out):.2f} dB")
    print(f"encode     {1000 * t_enc:.0f} ms (entropy coding {enc['coding_ms']:.0f} ms)")
    print(f"decode     {1000 * t_dec:.0f} ms (entropy coding {dec['coding_ms']:.0f} ms)")
    print(f"bit-exact  {bool(np.array_equal(enc['y_hat'], dec['y_hat']))} (decoded latents equal the encoder's)")
    if args.output:
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format=DECODE_FORMATS[Path(args.output).suffix.lower()])
        write_atomic(Path(args.output), buf.getvalue(), args.force)
        print(f"wrote      {args.output}")
    return 0


# -- the parser -------------------------------------------------------------------------------

def _add_rate_options(s) -> None:
    from .config import DEFAULT_QUALITY, MAX_QUALITY, MIN_QUALITY
    s.add_argument("--model", help="shipped model name, or a .safetensors weights file (default: default)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("-q", "--quality", type=_number(MIN_QUALITY, MAX_QUALITY),
                   help=f"rate: any value in {MIN_QUALITY:g}..{MAX_QUALITY:g} (1 = smallest files; the integers "
                        f"are the paper's lambdas; default {DEFAULT_QUALITY:g})")
    g.add_argument("--lmbda", type=_number(0, 1, lo_open=True),
                   help="rate as the training lambda (variable-rate models)")
    g.add_argument("--bpp", type=_number(0, 64, lo_open=True),
                   help="target file size in bits per pixel (variable-rate models)")
    g.add_argument("--psnr", type=_number(0, 100, lo_open=True), help="target PSNR in dB (variable-rate models)")
    s.add_argument("--rdo", type=_count(0), nargs="?", const=26, default=0, metavar="ITERS",
                   help="encoder-side online RDO with ITERS iterations (default 26, as in the paper): "
                        "smaller files, slower encoding, same decoder")
    s.add_argument("--max-pixels", type=_count(1), metavar="N", help="refuse larger images (default 8192*8192)")


def build_parser() -> Parser:
    from . import __version__
    from .config import DEFAULT_QUALITY, MAX_QUALITY, MIN_QUALITY
    common = Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error")
    common.add_argument("--threads", type=_count(1), metavar="N",
                        help="CPU threads (default: the cores this process may use that no other job keeps busy)")
    writes = Parser(add_help=False)
    writes.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    batch = Parser(add_help=False)
    batch.add_argument("-r", "--recursive", action="store_true", help="include the subfolders of input folders")

    p = Parser(prog="ecf", description="eContextformer learned image codec")
    p.add_argument("--version", action="version", version=f"ecf {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("encode", parents=[common, writes, batch], help="images -> .ecf",
                       description="Encode images (files, folders, or - for stdin) into .ecf streams.")
    s.add_argument("input", nargs="+", help="image files, folders, or - (stdin)")
    s.add_argument("-o", "--output", help="output .ecf file, folder (several inputs), or - (stdout); "
                                          "default: beside each input, x.png -> x.ecf")
    _add_rate_options(s)
    s.set_defaults(func=cmd_encode)

    s = sub.add_parser("decode", parents=[common, writes, batch], help=".ecf -> PNG",
                       description="Decode .ecf streams into lossless images (PNG unless -o says .tif, .bmp, .ppm).")
    s.add_argument("input", nargs="+", help=".ecf files, folders, or - (stdin)")
    s.add_argument("-o", "--output", help="output image, folder (several inputs), or - (PNG on stdout); "
                                          "default: x.ecf -> x.decoded.png")
    s.add_argument("--model", help="weights to decode with (default: the shipped model named in the stream)")
    s.add_argument("--mode", choices=("L", "RGB"), help="output colour mode (default: the source's, as stored)")
    s.add_argument("--max-pixels", type=_count(1), metavar="N", help="refuse larger images (default 8192*8192)")
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("info", parents=[common], help="print an .ecf header and check the stream",
                       description="Print an .ecf stream's header; exit 1 if the stream is damaged.")
    s.add_argument("input", help=".ecf file or - (stdin)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("eval", parents=[common, writes, batch], help="bpp / PSNR / MS-SSIM / timings over images")
    s.add_argument("folder", nargs="+", help="image folders or files")
    _add_rate_options(s)
    s.add_argument("--limit", type=_count(1))
    s.add_argument("--json", help="write per-image and mean results here")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("demo", parents=[common, writes],
                       help="encode + decode the bundled sample image, print bpp / PSNR / time")
    s.add_argument("--image", default=str(SAMPLE))
    s.add_argument("--model", default="default")
    s.add_argument("-q", "--quality", type=_number(MIN_QUALITY, MAX_QUALITY),
                   help=f"rate of a variable-rate model, {MIN_QUALITY:g}..{MAX_QUALITY:g} (default {DEFAULT_QUALITY:g})")
    s.add_argument("-o", "--output", help="write the decoded image (PNG)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("train", help="train a model (see python -m ecf_engine.train -h)", add_help=False)
    s.set_defaults(func=None)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main
        train_main(argv[1:])
        return 0
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                         # usage error (2), --help / --version (0)
        return e.code if isinstance(e.code, int) else 2
    torch_loaded = "torch" in sys.modules
    if torch_loaded:                                # called from Python: leave its thread count as found
        import torch
        threads_before = torch.get_num_threads()
    try:
        setup_threads(args.threads)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"ecf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:                          # noqa: BLE001 -- a CLI user gets one line, not a traceback
        from .errors import ECFError
        known = isinstance(e, (ECFError, OSError, CLIError))
        message = str(e) if known else f"internal error: {type(e).__name__}: {e}"
        if isinstance(e, OSError) and e.filename and e.strerror:
            message = f"{e.filename}: {e.strerror}"
        hint = "" if known or args.verbose else " (-v for the traceback)"
        print(f"ecf {args.command}: error: {message}{hint}", file=sys.stderr)
        if args.verbose:
            import traceback
            traceback.print_exc()
        return 1
    finally:
        if torch_loaded:
            torch.set_num_threads(threads_before)


if __name__ == "__main__":
    sys.exit(main())
