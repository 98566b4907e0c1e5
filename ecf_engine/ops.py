"""Backend selection shared by the accelerated ops: the ECF_BACKEND setting, the fast paths
loaded on first use, what ran last, and backend_report().

Each op keeps its PyTorch reference, its fast path(s) and its dispatch rule in one module,
and registers the rule here; a call and backend_report() both ask that rule:

    op                  module          fast path (first that applies under auto)
    window_attention    attention.py    triton (kernels/window_attention.py) on CUDA tensors
    cached_attention    attention.py    triton (kernels/cached_attention.py) on CUDA tensors
    egr, egr_inverse    egr.py          cpp / cuda (csrc/egr.cpp, egr_cuda.cu), only when forced
    fixedpoint          fixedpoint.py   c (csrc/fixedpoint.c) on CPU tensors
    fixed_attention     fixedpoint.py   triton (kernels/fixed_attention.py) on CUDA tensors
    rans                rans.py         c (csrc/rans.c) whenever it builds (not subject to ECF_BACKEND)

ECF_BACKEND (read at every call) picks:
    auto    default: the fast paths in the table above, the PyTorch references elsewhere
            (CPU float numerics stay those of the references).
    torch   PyTorch references everywhere (also the fixed-point C loops off).
    cpp / cuda   the EGR extension (the tensor's device decides which); the rest as auto.
    triton  Triton attention, also on CPU tensors when TRITON_INTERPRET=1 (the interpreter:
            slow, for tests); the rest as auto.
A fast path that cannot run (no triton, no compiler, build failed) falls back to the PyTorch
reference, with a one-line warning where it was forced. Training (autograd) always runs the
references: the kernels are forward-only. The C code is built on first use (csrc/__init__.py).
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import threading
import warnings
from typing import Callable, NamedTuple

import torch

from . import csrc

BACKENDS = ("auto", "torch", "cpp", "cuda", "triton")
KERNEL_MODULES = ("window_attention", "cached_attention", "fixed_attention")     # kernels/*.py
OP_MODULES = ("attention", "egr", "fixedpoint", "rans")       # they register their rules on import


class Choice(NamedTuple):
    """A rule's answer: the backend to run and why; warn: a forced backend that cannot run
    here (the call warns once and runs the reference)."""
    backend: str
    why: str
    warn: bool = False


Rule = Callable[..., Choice]           # rule(device type, dtype=None, grad=False) -> Choice

_lock = threading.Lock()
_rules: dict[str, Rule] = {}
_ran: dict[tuple[str, str], tuple[str, str]] = {}     # (op, device type) -> (backend, why), last call
_warned: set[str] = set()
_triton: dict = {}                                     # import state of the kernel modules
_extension: dict = {}                                  # 'cpu' / 'cuda' / 'native' -> module or failure reason


def requested() -> str:
    value = os.environ.get("ECF_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"ECF_BACKEND={value!r} is not one of {', '.join(BACKENDS)}")
    return value


def interpret() -> bool:
    """TRITON_INTERPRET=1: Triton kernels run in its interpreter, on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def register(op: str, rule: Rule) -> None:
    _rules[op] = rule


def choose(op: str, t: torch.Tensor) -> Choice:
    """The op's rule for a call on t (warns once if the rule says a forced backend cannot run)."""
    choice = _rules[op](t.device.type, t.dtype, torch.is_grad_enabled() and t.requires_grad)
    if choice.warn:
        warn_once(f"{op}: {choice.why}; using the PyTorch reference")
    return choice


def record(op: str, t: torch.Tensor | str, backend: str, why: str) -> str:
    """Notes what ran for a call on tensor t (or on a device type)."""
    _ran[(op, t if isinstance(t, str) else t.device.type)] = (backend, why)
    return backend


def fast_path(op: str, t: torch.Tensor, load: Callable[[Choice], tuple[object, str]], warn: bool):
    """The fast implementation the op's rule picks for a call on t, or None: run the reference.
    load(choice) -> (implementation, '') or (None, why not); warn: say so (once) when it cannot load."""
    choice = choose(op, t)
    if choice.backend == "torch":
        record(op, t, "torch", choice.why)
        return None
    impl, why = load(choice)
    if impl is None:
        if warn:
            warn_once(f"{op}: {why}; using the PyTorch reference")
        record(op, t, "torch", why)
        return None
    record(op, t, choice.backend, choice.why)
    return impl


def warn_once(message: str) -> None:
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def last_run() -> dict[tuple[str, str], tuple[str, str]]:
    """(op, device type) -> (backend, why) of the most recent call, in this process."""
    return dict(_ran)


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# -- fast paths, loaded on first use ----------------------------------------------------------

def triton_kernel(name: str, t: torch.Tensor):
    """(module ecf_engine.kernels.<name>, '') or (None, why not) for a launch on t. triton
    decides at @jit time whether kernels run compiled or interpreted, so the mode of the
    first import is kept, and a tensor on the other kind of device gets None."""
    with _lock:
        if "modules" not in _triton:
            try:
                _triton["interpret"] = interpret()
                _triton["modules"] = {n: importlib.import_module(f"ecf_engine.kernels.{n}") for n in KERNEL_MODULES}
                _triton["version"] = importlib.import_module("triton").__version__
            except Exception as e:          # ImportError, or a triton that fails to initialise
                _triton["modules"] = None
                _triton["error"] = f"triton unavailable ({_first_line(e)})"
    if _triton["modules"] is None:
        return None, _triton["error"]
    if _triton["interpret"] != (not t.is_cuda):
        mode = "interpreted" if _triton["interpret"] else "compiled"
        return None, f"Triton kernels were loaded {mode}; they cannot run on {t.device.type} tensors in this process"
    failed = _triton.get(f"failed {name}")
    return (None, failed) if failed else (_triton["modules"][name], "")


def triton_failed(name: str, e: Exception) -> str:
    """Marks a kernel that raised at compile or launch time: not tried again in this process."""
    _triton[f"failed {name}"] = f"Triton kernel {name} failed ({_first_line(e)})"
    return _triton[f"failed {name}"]


def _extension_module(cuda: bool):
    """The EGR extension (csrc/egr.cpp, + egr_cuda.cu for CUDA), built on first use; None if it
    cannot be built (the reason stays in _extension for the report)."""
    key = "cuda" if cuda else "cpu"
    with _lock:
        if key not in _extension:
            _extension[key] = csrc.build_egr_extension(cuda)
    module = _extension[key]
    return None if isinstance(module, str) else module


def native():
    """The C library of csrc/fixedpoint.c + csrc/rans.c (ctypes, built on first use), or a
    string saying why there is none."""
    with _lock:
        if "native" not in _extension:
            _extension["native"] = csrc.load_c_library()
    return _extension["native"]


def address(x) -> ctypes.c_void_p | None:
    """The data pointer of a contiguous tensor or numpy array for the C library (None stays
    None); the caller keeps x referenced until the call returns."""
    if x is None:
        return None
    return ctypes.c_void_p(x.data_ptr() if isinstance(x, torch.Tensor) else x.ctypes.data)


# -- report --------------------------------------------------------------------------

def _state(key: str) -> str:
    state = _extension.get(key)
    return "not built in this process (built on first use)" if state is None else (
        state if isinstance(state, str) else "loaded")


def backend_report() -> str:
    """What runs where and why: the setting, each op's rule per device type (the rule every
    call follows), the state of the fast paths, and the last call of each op."""
    for name in OP_MODULES:            # importing an op module registers its rules (they import ops)
        importlib.import_module(f"ecf_engine.{name}")
    forced = requested()
    lines = [f"ECF_BACKEND={forced}  TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}  "
             f"torch {torch.__version__}, CUDA {'available' if torch.cuda.is_available() else 'not available'}",
             "selected per op and device (inference; a fast path that cannot load falls back to torch):"]
    for op, rule in _rules.items():
        for device in ("cpu", "cuda"):
            choice = rule(device)
            lines.append(f"  {op:<17} {device:<5} {choice.backend:<7} {choice.why}")
    if "modules" not in _triton:
        installed = "installed" if importlib.util.find_spec("triton") is not None else "not installed"
        lines.append(f"triton: {installed}, kernels not loaded yet (loaded on first Triton call)")
    elif _triton["modules"] is None:
        lines.append(_triton["error"])
    else:
        mode = "interpreted" if _triton["interpret"] else "compiled"
        lines.append(f"triton {_triton['version']}: kernels loaded {mode}")
    lines.append(f"EGR cpp extension: {_state('cpu')}")
    lines.append(f"EGR cuda extension: {_state('cuda')}")
    lines.append(f"C library (fixed-point loops, rANS coder): {_state('native')}")
    lines.append("last call of each op:")
    ran = last_run()
    for op in _rules:
        for device in sorted({d for o, d in ran if o == op}) or ["-"]:
            backend, why = ran.get((op, device), ("not called yet", ""))
            lines.append(f"  {op:<17} {device:<5} {backend:<7} {why}")
    return "\n".join(lines)
