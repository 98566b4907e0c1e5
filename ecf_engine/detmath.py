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
import torch.nn.functional as F


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.tanh(0.5 * x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)), stable for large |x|."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


# -- convolutions whose result does not depend on the thread count -----------------------------

_state = threading.local()          # .depth: thread_invariant_kernels() regions entered on this thread


def thread_invariant_active() -> bool:
    """Whether this thread is inside thread_invariant_kernels()."""
    return getattr(_state, "depth", 0) > 0


_CONV_ARGS = {  # F.conv2d / F.conv_transpose2d: parameter order and defaults
    False: (("input", None), ("weight", None), ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1),
            ("groups", 1)),
    True: (("input", None), ("weight", None), ("bias", None), ("stride", 1), ("padding", 0), ("output_padding", 0),
           ("groups", 1), ("dilation", 1)),
}


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _native_conv(transposed: bool, args: tuple, kwargs: dict):
    """F.conv2d / F.conv_transpose2d(*args, **kwargs) through PyTorch's native im2col + GEMM
    kernels (those it runs with oneDNN off), or None where they do not apply: not a 4-D
    floating-point CPU tensor, or padding given as 'same' / 'valid'."""
    names = _CONV_ARGS[transposed]
    a = {name: default for name, default in names} | dict(zip((n for n, _ in names), args)) | kwargs
    x, weight, bias, groups = a["input"], a["weight"], a["bias"], a["groups"]
    if (not isinstance(x, torch.Tensor) or x.device.type != "cpu" or not x.is_floating_point() or x.dim() != 4
            or x.is_mkldnn or isinstance(a["padding"], str)):
        return None
    k, stride, padding, dilation = tuple(weight.shape[-2:]), _pair(a["stride"]), _pair(a["padding"]), _pair(a["dilation"])
    if transposed:
        def one(xg, wg, bg):
            return torch._C._nn.slow_conv_transpose2d(xg, wg, k, bg, stride, padding, _pair(a["output_padding"]),
                                                      dilation)
    elif dilation != (1, 1):
        def one(xg, wg, bg):
            return torch._C._nn.slow_conv_dilated2d(xg, wg, k, bg, stride, padding, dilation)
    else:
        def one(xg, wg, bg):
            return torch._C._nn.thnn_conv2d(xg, wg, k, bg, stride, padding)
    if groups == 1:
        return one(x, weight, bias)
    biases = [None] * groups if bias is None else bias.chunk(groups)       # one GEMM per group, as PyTorch does
    return torch.cat([one(*g) for g in zip(x.chunk(groups, 1), weight.chunk(groups), biases)], 1)


class _NativeConvolutions(torch.overrides.TorchFunctionMode):
    """Routes CPU floating-point conv2d / conv_transpose2d calls to the native kernels;
    everything else runs unchanged. A torch function mode is per thread, so other threads
    of the process keep their kernels."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d or func is F.conv_transpose2d:
            out = _native_conv(func is F.conv_transpose2d, args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def thread_invariant_kernels():
    """Within, on the calling thread only: CPU convolutions run through PyTorch's native im2col
    + GEMM kernels, whose results do not depend on the thread count (oneDNN's small-spatial and
    1x1 convolutions and deconvolutions do), bit for bit what PyTorch computes with oneDNN
    off. Costs ~1.5x on the CPU network time. The process-wide oneDNN switch
    (torch.backends.mkldnn) is left alone, so other threads of a host application are not
    affected. Nested uses are counted; also usable as a decorator.

    Not covered: MKL's own GEMM code path, which on some Intel AVX-512 hosts depends on the
    thread count too (g_s pixels moved by one level, the coded integers did not). MKL reads
    MKL_CBWR=AUTO,STRICT from the environment at its first GEMM, so that is the process
    owner's choice: the `ecf` command sets it before torch starts; a host application that
    wants the same pixels on any thread count sets it itself."""
    depth = getattr(_state, "depth", 0)
    mode = _NativeConvolutions() if depth == 0 else None
    _state.depth = depth + 1
    try:
        if mode is None:
            yield
        else:
            with mode:
                yield
    finally:
        _state.depth = depth
