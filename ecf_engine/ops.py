"""Backend dispatch: the one place that decides, per op and call, which implementation runs.

    op                  backends (first that applies under auto)
    window_attention    triton (kernels/window_attention.py)  | torch (contextformer reference)
    cached_attention    triton (kernels/cached_attention.py)  | torch (contextformer reference)
    egr, egr_inverse    cuda / cpp (csrc/, JIT-built)          | torch (egr.py reference)
    fixedpoint          c (csrc/fixedpoint.c, ctypes)          | torch (fixedpoint.py ops)
    fixed_attention     triton (kernels/fixed_attention.py)   | fixedpoint (C loops / torch ops)
                        CUDA tensors under auto; CPU only forced + TRITON_INTERPRET=1
    (y coding, formats 3 and 4: csrc/rans.c in the same library whenever it builds, else rans.py's
     Python version; not subject to ECF_BACKEND)

ECF_BACKEND (read at every call) picks:
    auto    default. CUDA tensors: Triton attention. CPU tensors: the PyTorch references,
            which keeps CPU numerics exactly as they were. EGR: the PyTorch reference on
            both: the extensions are bitwise equal but save < 1 ms of a Kodak decode, not
            worth a JIT build (~40 s C++, ~1 min nvcc) inside the first encode.
    torch   PyTorch references everywhere.
    cpp / cuda   the EGR extension (cpp and cuda name the same extension; the tensor's device
            decides); attention stays on auto.
    triton  Triton attention, also on CPU tensors when TRITON_INTERPRET=1 (the interpreter:
            slow, for tests); EGR stays on auto.
fixedpoint (the fused integer loops of the fixed-point entropy-parameter networks): on CPU
tensors the C loops under every setting but torch (they give the same integers as the
PyTorch ops and build with the C compiler in about a second, cached); on CUDA the
PyTorch ops.
A forced backend that cannot run (no triton, no CUDA, build failed) falls back to the
PyTorch reference with a one-line warning. Training (autograd) always uses the references:
the kernels are forward-only. backend_report() says what runs where and why.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.util
import os
import subprocess
import tempfile
import re
import shutil
import threading
import warnings
from pathlib import Path

import torch

BACKENDS = ("auto", "torch", "cpp", "cuda", "triton")
ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_lock = threading.Lock()
_ran: dict[tuple[str, str], tuple[str, str]] = {}     # (op, device type) -> (backend, why), last call
_warned: set[str] = set()
_triton: dict = {}                                     # import state of the kernel modules
_extension: dict = {}                                  # cpu / cuda -> module or failure reason


def requested() -> str:
    value = os.environ.get("ECF_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"ECF_BACKEND={value!r} is not one of {', '.join(BACKENDS)}")
    return value


def _warn_once(message: str) -> None:
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _record(op: str, t: torch.Tensor, backend: str, why: str) -> str:
    _ran[(op, t.device.type)] = (backend, why)
    return backend


# -- Triton --------------------------------------------------------------------------

def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _kernels():
    """The Triton kernel modules, imported on first use; None (reason in _triton['error']) without triton.

    triton decides at @jit time whether kernels run compiled or interpreted, so the mode
    the modules were imported in is kept and checked."""
    with _lock:
        if "modules" not in _triton:
            try:
                _triton["interpret"] = _interpret()
                _triton["modules"] = (importlib.import_module("ecf_engine.kernels.window_attention"),
                                      importlib.import_module("ecf_engine.kernels.cached_attention"),
                                      importlib.import_module("ecf_engine.kernels.fixed_attention"))
                _triton["version"] = importlib.import_module("triton").__version__
            except Exception as e:          # ImportError, or a triton that fails to initialise
                _triton["modules"] = None
                _triton["error"] = f"triton unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return _triton["modules"]


def _attention_backend(op: str, t: torch.Tensor) -> str:
    forced = requested()
    if forced == "torch":
        return _record(op, t, "torch", "ECF_BACKEND=torch")
    if torch.is_grad_enabled() and t.requires_grad:
        return _record(op, t, "torch", "autograd: the Triton kernels are forward-only")
    if t.dtype not in ATTENTION_DTYPES:
        return _record(op, t, "torch", f"Triton kernels take float32/float16/bfloat16, not {t.dtype}")
    if not t.is_cuda and forced != "triton":
        return _record(op, t, "torch", "CPU tensor: PyTorch reference (Triton runs on CUDA; force with "
                                       "ECF_BACKEND=triton and TRITON_INTERPRET=1)")
    if not t.is_cuda and not _interpret():
        _warn_once("ECF_BACKEND=triton on CPU tensors needs TRITON_INTERPRET=1; using the PyTorch reference")
        return _record(op, t, "torch", "Triton forced on CPU without TRITON_INTERPRET=1")
    if _kernels() is None:
        if forced == "triton":
            _warn_once(f"ECF_BACKEND=triton: {_triton['error']}; using the PyTorch reference")
        return _record(op, t, "torch", _triton["error"])
    if _triton["interpret"] != (not t.is_cuda):
        mode = "interpreted" if _triton["interpret"] else "compiled"
        _warn_once(f"Triton kernels were loaded {mode} and cannot run on {t.device.type} tensors in this process; "
                   "using the PyTorch reference")
        return _record(op, t, "torch", f"kernels loaded {mode}, tensor on {t.device.type}")
    why = "CUDA tensor" if t.is_cuda else "forced, TRITON_INTERPRET=1 (CPU interpreter)"
    return _record(op, t, "triton", why)


def _qkv_views(qkv: torch.Tensor, heads: int):
    """(B, S, H, W2, 3*d) -> q, k, v views (B, S, H, W2, heads, d/heads); each head's
    channels are [q | k | v], as SCABlock's reference splits them."""
    return qkv.unflatten(-1, (heads, -1)).chunk(3, dim=-1)


def window_attention(qkv: torch.Tensor, heads: int, grid, bias: torch.Tensor, bias_spatial: torch.Tensor,
                     bias_slab: torch.Tensor) -> torch.Tensor:
    """Masked (shifted-)window attention over slabs 0..S-1: qkv (B, S, H, W2, 3*d) -> (B, S, H, W2, d).

    bias (heads, N, N): relative position bias + group-causal mask, precomputed for the
    reference; the kernel gathers the same values from bias_spatial / bias_slab itself."""
    if _attention_backend("window_attention", qkv) == "triton":
        return _kernels()[0].window_attention(*_qkv_views(qkv, heads), bias_spatial, bias_slab, grid)
    from .contextformer import window_attention_reference
    return window_attention_reference(qkv, heads, grid, bias)


def cached_attention(qkv: torch.Tensor, heads: int, step: int, grid, bias: torch.Tensor,
                     bias_spatial: torch.Tensor, bias_slab: torch.Tensor, cache) -> torch.Tensor:
    """Decoding step `step`: qkv (B, 1, H, W2, 3*d) of slab `step` -> (B, 1, H, W2, d), attending to
    slabs 0..step; writes the slab's keys / values into cache (a contextformer.LayerCache)."""
    if _attention_backend("cached_attention", qkv) == "triton":
        return _kernels()[1].cached_attention(*_qkv_views(qkv, heads), cache.k, cache.v, step,
                                              bias_spatial, bias_slab, grid)
    from .contextformer import cached_attention_reference
    return cached_attention_reference(qkv, heads, step, grid, bias, cache)


def fixed_cached_attention(q, cache_k, cache_v, bias, key_valid, exp_table, step: int, frac: int):
    """The exact fixed-point attention of a decoding step as one Triton launch
    (kernels/fixed_attention.py), or None where the PyTorch / C path should run: CPU tensors
    (unless ECF_BACKEND=triton with TRITON_INTERPRET=1), ECF_BACKEND=torch, no triton, or a
    kernel that failed once in this process (warned; the other path gives the same integers)."""
    op = "fixed_attention"
    forced = requested()
    if forced == "torch":
        _record(op, q, "torch", "ECF_BACKEND=torch")
        return None
    if not q.is_cuda and not (forced == "triton" and _interpret()):
        _record(op, q, "torch", "CPU tensor: C loops / PyTorch ops")
        return None
    if _triton.get("fixed_failed") or _kernels() is None or _triton["interpret"] != (not q.is_cuda):
        _record(op, q, "torch", _triton.get("fixed_failed") or _triton.get("error") or "kernels loaded for another mode")
        return None
    try:
        out = _kernels()[2].fixed_cached_attention(q, cache_k, cache_v, bias, key_valid, exp_table, step, frac)
    except Exception as e:                  # compile or launch failure on this GPU / triton version
        _triton["fixed_failed"] = f"fixed-point Triton kernel failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        _warn_once(_triton["fixed_failed"] + "; using the PyTorch ops (same integers)")
        _record(op, q, "torch", _triton["fixed_failed"])
        return None
    _record(op, q, "triton", "CUDA tensor" if q.is_cuda else "forced, TRITON_INTERPRET=1 (CPU interpreter)")
    return out


# -- C++ / CUDA extension ------------------------------------------------------------------

def _sources() -> Path:
    return Path(importlib.import_module("ecf_engine.csrc").__file__).parent


def _extension_module(cuda: bool):
    """The EGR extension, built with torch.utils.cpp_extension.load (ninja) on first use and
    cached by torch; None if it cannot be built (reason kept for the report)."""
    key = "cuda" if cuda else "cpu"
    with _lock:
        if key not in _extension:
            _extension[key] = _build(cuda)
    module = _extension[key]
    return None if isinstance(module, str) else module


def _build(cuda: bool):
    """Returns the module, or a string saying why there is none."""
    try:
        from torch.utils import cpp_extension
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            return f"no C++ compiler ({compiler}) on PATH"
        if not cpp_extension.is_ninja_available():
            return "ninja not available (pip install ninja)"
        if cuda and cpp_extension.CUDA_HOME is None:
            return "CUDA_HOME not found (nvcc needed for the CUDA extension)"
        src = _sources()
        tag = re.sub(r"\W", "_", torch.__version__)        # a build per torch version
        name = f"ecf_egr_{'cuda' if cuda else 'cpu'}_{tag}"
        sources = [str(src / "egr.cpp")] + ([str(src / "egr_cuda.cu")] if cuda else [])
        flags = ["-O3"] + (["-DWITH_CUDA"] if cuda else [])
        return cpp_extension.load(name, sources, extra_cflags=flags, extra_cuda_cflags=["-O3"], verbose=False)
    except Exception as e:                  # compiler errors, missing headers, ...
        lines = [line for line in str(e).splitlines() if line.strip()]
        return f"build failed ({type(e).__name__}: {lines[-1] if lines else ''})"


def _egr_backend(op: str, t: torch.Tensor):
    """(backend, extension module or None)."""
    forced = requested()
    if forced == "torch":
        return _record(op, t, "torch", "ECF_BACKEND=torch"), None
    if torch.is_grad_enabled() and t.requires_grad:
        return _record(op, t, "torch", "autograd: the extension has no backward"), None
    if forced not in ("cpp", "cuda"):
        return _record(op, t, "torch", "PyTorch reference by default: the extension saves < 1 ms per Kodak image "
                                       "and costs a JIT build on first use (force with ECF_BACKEND=cpp / cuda)"), None
    if t.device.type not in ("cpu", "cuda"):
        return _record(op, t, "torch", f"no extension for {t.device.type} tensors"), None
    module = _extension_module(t.is_cuda)
    name = "cuda" if t.is_cuda else "cpp"
    if module is None:
        reason = _extension["cuda" if t.is_cuda else "cpu"]
        _warn_once(f"EGR {name} extension unavailable: {reason}; using the PyTorch reference")
        return _record(op, t, "torch", reason), None
    return _record(op, t, name, "forced" if forced in ("cpp", "cuda") else "CUDA tensor"), module


def egr(y: torch.Tensor, n_cs: int) -> torch.Tensor:
    """(B, M, H, W) -> (B, 2*n_cs, H, W//2, M//n_cs); see egr.py."""
    backend, module = _egr_backend("egr", y)
    if module is not None:
        return module.egr(y, n_cs)
    from .egr import egr_reference
    return egr_reference(y, n_cs)


def egr_inverse(slabs: torch.Tensor, n_cs: int) -> torch.Tensor:
    """(B, 2*n_cs, H, W2, p) -> (B, n_cs*p, H, 2*W2); see egr.py."""
    backend, module = _egr_backend("egr_inverse", slabs)
    if module is not None:
        return module.egr_inverse(slabs, n_cs)
    from .egr import egr_inverse_reference
    return egr_inverse_reference(slabs, n_cs)


# -- report --------------------------------------------------------------------------

# -- fixed-point loops (csrc/fixedpoint.c through ctypes) -----------------------------------

_FIXED_FUNCTIONS = {
    "fp_requant": [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                   ctypes.c_double, ctypes.c_int, ctypes.c_double, ctypes.c_int],
    "fp_gelu": [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int],
    "fp_softmax_weights": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_double, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int],
    "fp_normalize": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int],
    "fp_layernorm": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                     ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_double, ctypes.c_int],
    "ecf_gmm_tables": [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int] + [ctypes.c_void_p] * 3,
    "ecf_gmm_symbols": [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_int] + [ctypes.c_void_p] * 2,
    "ecf_rans_encode": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                        ctypes.c_uint64],
    "ecf_rans_decode_group": [ctypes.c_void_p] * 4 + [ctypes.c_int64] + [ctypes.c_void_p] * 3
                             + [ctypes.c_int, ctypes.c_void_p, ctypes.c_int],
}
_RESTYPES = {"ecf_gmm_tables": ctypes.c_int, "ecf_gmm_symbols": ctypes.c_int64, "ecf_rans_encode": ctypes.c_int64,
             "ecf_rans_decode_group": ctypes.c_int}


def _build_native():
    """ctypes library of csrc/fixedpoint.c + csrc/rans.c, compiled on first use into
    ~/.cache/ecf_engine (or $ECF_CACHE; the temp folder if that is not writable) under a
    name that hashes the sources; or a string saying why not."""
    sources = [_sources() / "fixedpoint.c", _sources() / "rans.c"]
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) on PATH"
    digest = hashlib.sha256(b"".join(s.read_bytes() for s in sources)).hexdigest()[:16]
    caches = [Path(os.environ.get("ECF_CACHE", Path.home() / ".cache" / "ecf_engine")),
              Path(tempfile.gettempdir()) / f"ecf_engine-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]
    why = ""
    for cache in caches:
        try:
            return _load_native(cache / f"ecf-native-{digest}.so", compiler, sources)
        except OSError as e:                   # unwritable cache, unloadable file: try the next place
            why = f"{type(e).__name__}: {e}"
        except RuntimeError as e:              # the compiler failed: no point in another folder
            return str(e)
    return f"C library unavailable ({why})"


def _load_native(target: Path, compiler: str, sources: list[Path]) -> ctypes.CDLL:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            cmd = [compiler, "-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", *map(str, sources),
                   "-o", str(built), "-lm"]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode:
                lines = run.stderr.strip().splitlines()
                raise RuntimeError(f"C build failed ({lines[-1] if lines else run.returncode})")
            os.replace(built, target)              # atomic: concurrent builders do not clash
    lib = ctypes.CDLL(str(target))
    for name, argtypes in _FIXED_FUNCTIONS.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = _RESTYPES.get(name)
    return lib


def native():
    """The compiled C library (built on first use), or a string saying why there is none."""
    with _lock:
        if "native" not in _extension:
            _extension["native"] = _build_native()
    return _extension["native"]


def address(x) -> ctypes.c_void_p | None:
    """The data pointer of a contiguous tensor or numpy array for the C library (None stays
    None); the caller keeps x referenced until the call returns."""
    if x is None:
        return None
    return ctypes.c_void_p(x.data_ptr() if isinstance(x, torch.Tensor) else x.ctypes.data)


def fixed_loops(t: torch.Tensor):
    """The compiled fixed-point loops for a tensor, or None: use the PyTorch ops."""
    op = "fixedpoint"
    if requested() == "torch":
        _record(op, t, "torch", "ECF_BACKEND=torch")
        return None
    if t.device.type != "cpu":
        _record(op, t, "torch", f"{t.device.type} tensor: PyTorch ops")
        return None
    lib = native()
    if isinstance(lib, str):
        _warn_once(f"fixed-point C loops unavailable: {lib}; using the PyTorch ops (slower, same integers)")
        _record(op, t, "torch", lib)
        return None
    _record(op, t, "c", "compiled csrc/fixedpoint.c")
    return lib


def last_run() -> dict[tuple[str, str], tuple[str, str]]:
    """(op, device type) -> (backend, why) of the most recent call, in this process."""
    return dict(_ran)


def _plan(forced: str) -> list[str]:
    """What the current setting selects for each kind of op and device, before any call."""
    has_triton = importlib.util.find_spec("triton") is not None
    triton_cuda = "triton" if has_triton else "torch (triton not installed)"
    if forced == "torch":
        return ["attention, cpu + cuda: torch (ECF_BACKEND=torch)", "egr, cpu + cuda: torch (ECF_BACKEND=torch)"]
    if forced == "triton":
        cpu = (triton_cuda + " (interpreted)") if _interpret() else "torch (needs TRITON_INTERPRET=1)"
    else:
        cpu = "torch (reference; Triton on CPU only when forced, interpreted)"
    ext = "extension, built on first use (else torch)"
    fixed = "torch (ECF_BACKEND=torch)" if forced == "torch" else "c (csrc/fixedpoint.c, built on first use)"
    fixed_cuda = "torch (ECF_BACKEND=torch)" if forced == "torch" else f"{triton_cuda} (exact step kernel), else torch"
    return [f"attention, cpu: {cpu}", f"attention, cuda: {triton_cuda}", f"fixedpoint, cpu: {fixed}",
            f"fixedpoint, cuda: torch; its step attention: {fixed_cuda}",
            f"egr, cpu: {'cpp ' + ext if forced in ('cpp', 'cuda') else 'torch (reference; ECF_BACKEND=cpp for C++)'}",
            f"egr, cuda: {'cuda ' + ext if forced in ('cpp', 'cuda') else 'torch (reference; ECF_BACKEND=cuda for CUDA)'}"]


def backend_report() -> str:
    """What runs where and why: the setting, what it selects per device, what is available,
    and the backend of the last call of each op in this process."""
    forced = requested()
    lines = [f"ECF_BACKEND={forced}  TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}  "
             f"torch {torch.__version__}, CUDA {'available' if torch.cuda.is_available() else 'not available'}"]
    lines += ["selected per op and device:"] + ["  " + line for line in _plan(forced)]
    if "modules" not in _triton:
        triton = "triton: not loaded yet (loaded on first Triton call)"
    elif _triton["modules"] is None:
        triton = _triton["error"]
    else:
        triton = f"triton {_triton['version']}: kernels loaded {'interpreted' if _triton['interpret'] else 'compiled'}"
    lines.append(triton)
    for key in ("cpu", "cuda"):
        state = _extension.get(key)
        text = ("not built in this process (built on first use)" if state is None
                else state if isinstance(state, str) else "loaded")
        lines.append(f"EGR {'cpp' if key == 'cpu' else 'cuda'} extension: {text}")
    state = _extension.get("native")
    lines.append("C library (fixed-point loops, rANS coder): " + ("not built in this process (built on first use)" if state is None
                                            else state if isinstance(state, str) else "loaded"))
    lines.append("last call of each op:")
    ran = last_run()
    for op in ("window_attention", "cached_attention", "egr", "egr_inverse", "fixedpoint", "fixed_attention"):
        for device in sorted({d for o, d in ran if o == op}) or ["-"]:
            backend, why = ran.get((op, device), ("not called yet", ""))
            lines.append(f"  {op:<17} {device:<5} {backend:<7} {why}")
    return "\n".join(lines)
