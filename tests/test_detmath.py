"""detmath.thread_invariant_kernels: the native convolutions it selects are those PyTorch runs
with oneDNN off (bit for bit), give the same bits on 1 and 2 threads, and affect only the
calling thread."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from ecf_engine.detmath import thread_invariant_active, thread_invariant_kernels

# (in, out, kernel, stride, groups, dilation, transposed): the shapes of g_a / g_s / h_a / h_s
# and GDN, plus grouped and dilated ones
CASES = [(3, 8, 3, 2, 1, 1, False), (8, 8, 3, 1, 1, 1, False), (8, 4, 1, 1, 1, 1, False), (8, 8, 5, 2, 1, 1, False),
         (8, 8, 3, 2, 1, 1, True), (8, 6, 5, 2, 1, 1, True), (8, 8, 3, 1, 4, 1, False), (8, 8, 3, 1, 1, 2, False),
         (8, 4, 3, 2, 2, 1, True)]


def _conv(x, case, **kw):
    cin, cout, k, s, g, d, transposed = case
    torch.manual_seed(k + 10 * cout)
    if transposed:
        w = torch.randn(cin, cout // g, k, k)
        return F.conv_transpose2d(x, w, torch.randn(cout), s, d * (k // 2), s - 1, g, d, **kw)
    w = torch.randn(cout, cin // g, k, k)
    return F.conv2d(x, w, bias=torch.randn(cout), stride=s, padding=d * (k // 2), dilation=d, groups=g, **kw)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("batch", [1, 2])
def test_native_convolutions_equal_pytorch_with_onednn_off(case, batch):
    x = torch.randn(batch, case[0], 12, 9)[..., 1:, :]             # odd size, not contiguous
    with torch.backends.mkldnn.flags(enabled=False):
        want = _conv(x, case)
    with thread_invariant_kernels():
        got = _conv(x, case)
    assert torch.equal(got, want)


def test_results_do_not_depend_on_the_thread_count():
    before = torch.get_num_threads()
    inputs = [torch.randn(1, case[0], 16, 16) for case in CASES]
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with thread_invariant_kernels():
                outs.append([_conv(x, case) for x, case in zip(inputs, CASES)])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_other_threads_keep_their_kernels():
    """While one thread is inside the region, another thread's convolutions run as they would
    without it (oneDNN stays on process-wide), and nesting counts."""
    inside, release = threading.Event(), threading.Event()

    def hold():
        with thread_invariant_kernels(), thread_invariant_kernels():
            inside.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert inside.wait(30)
        assert torch.backends.mkldnn.enabled and not thread_invariant_active()
        x = torch.randn(2, 8, 12, 12)
        with torch.profiler.profile() as prof:
            _conv(x, CASES[1])
        names = {e.name for e in prof.events()}
        with torch.backends.mkldnn.flags(enabled=False), torch.profiler.profile() as native:
            _conv(x, CASES[1])
        assert names != {e.name for e in native.events()}       # not the native kernel
    finally:
        release.set()
        worker.join()
    with thread_invariant_kernels():
        assert thread_invariant_active()
    assert not thread_invariant_active()
