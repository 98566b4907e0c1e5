"""Thread-count-invariant versions of float ops the coder depends on.

On the CPU, PyTorch splits elementwise work into one chunk per thread, and the few
elements at a chunk's end go through a scalar code path. For most ops (exp, log, log1p,
tanh, erf, arithmetic) the scalar and vectorized paths agree bit for bit, but for
torch.sigmoid and F.softplus in float32 they do not: the same tensor then gives
different last bits with 1 and 2 threads, and an encoder and decoder running on
different thread counts derive different entropy parameters. These compositions of
invariant ops give the same values (to rounding) and the same bits on any thread count.
"""
from __future__ import annotations

import contextlib
import threading

import torch


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.tanh(0.5 * x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)), stable for large |x|."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


_guard_lock = threading.Lock()
_guard_depth = 0
_guard_saved = True


@contextlib.contextmanager
def thread_invariant_kernels():
    """Within: oneDNN (mkldnn) CPU kernels off, so convolutions run through PyTorch's
    native im2col + GEMM path, whose results do not depend on the thread count (oneDNN's
    small-spatial and 1x1 convolutions and deconvolutions do). Costs ~1.5x on the CPU
    network time. The switch is process-wide; nested and concurrent uses are counted,
    and the previous setting comes back when the last one leaves."""
    global _guard_depth, _guard_saved
    with _guard_lock:
        if _guard_depth == 0:
            _guard_saved = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                torch.backends.mkldnn.enabled = _guard_saved
