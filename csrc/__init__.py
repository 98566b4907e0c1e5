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
import stat
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
    "fp_layernorm": ([_P, _P, _I64, _I64, _P, _P, _I64, _I64, _INT, _F64, _INT], None),
    "ecf_gmm_tables": ([_P] * 4 + [_I64, _INT] + [_P] * 3, _INT),
    "ecf_gmm_symbols": ([_P] * 5 + [_I64, _INT] + [_P] * 2, _I64),
    "ecf_rans_encode": ([_P, _P, _I64, _P, _I64, ctypes.c_uint64], _I64),
    "ecf_rans_decode_group": ([_P] * 4 + [_I64] + [_P] * 3 + [_INT, _P, _INT], _INT),
    "ecf_rans_constants": ([_P, _I64], _I64),
}


def private_cache_dir() -> Path:
    """This user's build cache: $ECF_CACHE, else $XDG_CACHE_HOME/ecf_engine, else
    ~/.cache/ecf_engine; created with mode 0700. Raises OSError unless the folder belongs to
    this user, is not open to others, and no folder above it lets another user replace it
    (each is owned by root or this user, and writable by others only with the sticky bit)."""
    cache = os.environ.get("ECF_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ecf_engine"
    cache = Path(os.path.realpath(cache))            # the folders checked are the real ones
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not hasattr(os, "getuid"):                    # no POSIX ownership (Windows): the user profile is private
        return cache
    uid = os.getuid()
    for folder in reversed(cache.parents):           # '/' first
        st = os.stat(folder)
        if st.st_uid not in (0, uid) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            raise PermissionError(f"{folder} could be changed by another user: not used as the build cache")
    st = os.stat(cache)
    if st.st_uid != uid:
        raise PermissionError(f"{cache} belongs to uid {st.st_uid}, not this user: not used as the build cache")
    if st.st_mode & 0o022:
        raise PermissionError(f"{cache} is writable by other users: not used as the build cache")
    if st.st_mode & 0o077:
        os.chmod(cache, 0o700)                       # only this user could write it: tighten, keep the builds
    return cache


def load_c_library():
    """ctypes library of csrc/fixedpoint.c + csrc/rans.c, compiled on first use into the
    private cache (private_cache_dir) under a name that hashes the sources, compiler and
    flags; where there is no usable cache, into a fresh private temporary folder (mkdtemp)
    that is removed once the library is loaded. Returns the library or a string saying why not."""
    sources = [SOURCES / name for name in C_SOURCES]
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) on PATH"
    key = b"\0".join([compiler.encode(), *(f.encode() for f in C_FLAGS), *(s.read_bytes() for s in sources)])
    name = f"ecf-native-{hashlib.sha256(key).hexdigest()[:16]}.so"
    try:
        try:
            return _load(private_cache_dir() / name, compiler, sources)
        except OSError as e:                         # no usable cache: build for this process only
            cache_error = f"{type(e).__name__}: {e}"
        with tempfile.TemporaryDirectory(prefix="ecf_engine-") as tmp:
            return _load(Path(tmp) / name, compiler, sources)     # loaded code stays mapped after the removal
    except RuntimeError as e:                        # the compiler failed
        return str(e)
    except OSError as e:
        return f"C library unavailable ({type(e).__name__}: {e}; cache: {cache_error})"


def _load(target: Path, compiler: str, sources: list[Path]) -> ctypes.CDLL:
    """Builds target (in a private folder) unless it is there, then loads it."""
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            run = subprocess.run([compiler, *C_FLAGS, *map(str, sources), "-o", str(built), "-lm"],
                                 capture_output=True, text=True)
            if run.returncode:
                lines = run.stderr.strip().splitlines()
                raise RuntimeError(f"C build failed ({lines[-1] if lines else run.returncode})")
            os.replace(built, target)              # atomic: concurrent builders do not clash
    st = os.lstat(target)
    if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o022:
        raise PermissionError(f"{target} is not a file of this user's own: not loaded")
    lib = ctypes.CDLL(str(target))
    for name, (argtypes, restype) in C_FUNCTIONS.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = restype
    return lib


def build_egr_extension(cuda: bool):
    """The EGR extension module, built with torch.utils.cpp_extension.load (ninja) into the
    private cache (private_cache_dir()/torch_extensions, not torch's shared default); or a
    string saying why there is none."""
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
        build = private_cache_dir() / "torch_extensions" / name
        for folder in (build.parent, build):
            folder.mkdir(mode=0o700, exist_ok=True)
        return cpp_extension.load(name, sources, extra_cflags=flags, extra_cuda_cflags=["-O3"],
                                  build_directory=str(build), verbose=False)
    except Exception as e:                  # compiler errors, missing headers, ...
        lines = [line for line in str(e).splitlines() if line.strip()]
        return f"build failed ({type(e).__name__}: {lines[-1] if lines else ''})"
