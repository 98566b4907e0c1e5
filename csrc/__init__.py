"""Native code of ecf_engine, installed as ecf_engine.csrc, and how it is built.

    fixedpoint.c + rans.c   one plain C library (no PyTorch headers), loaded with ctypes:
                            load_c_library() compiles it on first use (about a second)
    egr.cpp + egr_cuda.cu   the C++ / CUDA EGR extension: build_egr_extension() builds it with
                            torch.utils.cpp_extension (ninja) on first use

Both return a string saying why not instead of raising: the callers (ecf_engine/ops.py) then
run the PyTorch / Python references, which give the same results.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent
C_SOURCES = ("fixedpoint.c", "rans.c")
C_FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off")   # no FMA contraction: exact float steps

# the C library's functions: argument and result types (csrc/fixedpoint.c, csrc/rans.c)
_P, _I64, _INT, _F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
C_FUNCTIONS = {
    "fp_requant": ([_P, _I64, _I64, _I64, _P, _F64, _INT, _F64, _INT], None),
    "fp_gelu": ([_P, _I64, _P, _F64, _INT], None),
    "fp_softmax_weights": ([_P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _F64, _P, _I64, _INT], None),
    "fp_normalize": ([_P, _P, _I64, _I64, _INT], None),
    "fp_layernorm": ([_P, _P, _I64, _I64, _P, _P, _I64, _I64, _F64, _INT], None),
    "ecf_gmm_tables": ([_P] * 4 + [_I64, _INT] + [_P] * 3, _INT),
    "ecf_gmm_symbols": ([_P] * 5 + [_I64, _INT] + [_P] * 2, _I64),
    "ecf_rans_encode": ([_P, _P, _I64, _P, _I64, ctypes.c_uint64], _I64),
    "ecf_rans_decode_group": ([_P] * 4 + [_I64] + [_P] * 3 + [_INT, _P, _INT], _INT),
}


def load_c_library():
    """ctypes library of csrc/fixedpoint.c + csrc/rans.c, compiled on first use into
    ~/.cache/ecf_engine (or $ECF_CACHE; the temp folder if that is not writable) under a
    name that hashes the sources; or a string saying why not."""
    sources = [SOURCES / name for name in C_SOURCES]
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) on PATH"
    digest = hashlib.sha256(b"".join(s.read_bytes() for s in sources)).hexdigest()[:16]
    caches = [Path(os.environ.get("ECF_CACHE", Path.home() / ".cache" / "ecf_engine")),
              Path(tempfile.gettempdir()) / f"ecf_engine-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]
    why = ""
    for cache in caches:
        try:
            return _load(cache / f"ecf-native-{digest}.so", compiler, sources)
        except OSError as e:                   # unwritable cache, unloadable file: try the next place
            why = f"{type(e).__name__}: {e}"
        except RuntimeError as e:              # the compiler failed: no point in another folder
            return str(e)
    return f"C library unavailable ({why})"


def _load(target: Path, compiler: str, sources: list[Path]) -> ctypes.CDLL:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            run = subprocess.run([compiler, *C_FLAGS, *map(str, sources), "-o", str(built), "-lm"],
                                 capture_output=True, text=True)
            if run.returncode:
                lines = run.stderr.strip().splitlines()
                raise RuntimeError(f"C build failed ({lines[-1] if lines else run.returncode})")
            os.replace(built, target)              # atomic: concurrent builders do not clash
    lib = ctypes.CDLL(str(target))
    for name, (argtypes, restype) in C_FUNCTIONS.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = restype
    return lib


def build_egr_extension(cuda: bool):
    """The EGR extension module, built with torch.utils.cpp_extension.load (ninja) and cached
    by torch; or a string saying why there is none."""
    try:
        import torch
        from torch.utils import cpp_extension
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            return f"no C++ compiler ({compiler}) on PATH"
        if not cpp_extension.is_ninja_available():
            return "ninja not available (pip install ninja)"
        if cuda and cpp_extension.CUDA_HOME is None:
            return "CUDA_HOME not found (nvcc needed for the CUDA extension)"
        tag = re.sub(r"\W", "_", torch.__version__)        # a build per torch version
        name = f"ecf_egr_{'cuda' if cuda else 'cpu'}_{tag}"
        sources = [str(SOURCES / "egr.cpp")] + ([str(SOURCES / "egr_cuda.cu")] if cuda else [])
        flags = ["-O3"] + (["-DWITH_CUDA"] if cuda else [])
        return cpp_extension.load(name, sources, extra_cflags=flags, extra_cuda_cflags=["-O3"], verbose=False)
    except Exception as e:                  # compiler errors, missing headers, ...
        lines = [line for line in str(e).splitlines() if line.strip()]
        return f"build failed ({type(e).__name__}: {lines[-1] if lines else ''})"
