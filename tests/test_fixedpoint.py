"""Fixed-point entropy parameters: exact integer arithmetic, independent of summation order,
thread count, batch and schedule, and close to the float networks."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ecf_engine
from ecf_engine import schedule
from ecf_engine.config import Config
from ecf_engine.egr import egr
from ecf_engine.engine import to_input
from ecf_engine.entropy import LOG_SCALE_RANGE, LOG_SCALE_STEPS, SCALE_MIN, quantize_fixed, quantize_gmm
from ecf_engine.fixedpoint import (EXP_FRAC, FRAC, ONE, Affine, FixedPointContext, FixedPointHyper, LayerNorm, Tables, attend,
                                   div_round, isqrt, shift_round, tie_distance)
from ecf_engine.model import ECFModel

SAMPLE = Path(__file__).resolve().parents[1] / "ecf_engine" / "data" / "sample.png"


def test_integer_helpers_are_exact():
    rng = random.Random(0)
    a = [rng.randrange(-2 ** 45, 2 ** 45) for _ in range(2000)] + [-7, -6, -5, 5, 6, 7, 0]
    b = [rng.randrange(1, 2 ** 20) for _ in a[:-7]] + [2, 4, 2, 2, 4, 2, 3]
    got = div_round(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert got.tolist() == [(2 * x + y) // (2 * y) for x, y in zip(a, b)]
    for k in (1, 4, 12):
        want = [(x + (1 << (k - 1))) >> k for x in a]
        assert shift_round(torch.tensor(a), k).tolist() == want
        assert shift_round(torch.tensor(a, dtype=torch.float64), k).tolist() == want
    v = [rng.randrange(0, 2 ** 58) for _ in range(2000)] + [0, 1, 2 ** 58 - 1, (2 ** 29 - 1) ** 2, (2 ** 29) ** 2 - 1]
    assert isqrt(torch.tensor(v)).tolist() == [math.isqrt(x) for x in v]


def test_tables_are_far_from_rounding_ties():
    """Entries at least 1e-6 units from a tie: any math library accurate to 1e-6 units (far
    coarser than float64 exp / erf) builds the same integer tables."""
    t = Tables()
    assert tie_distance(t.gelu_float) > 1e-6 and tie_distance(t.exp_float) > 1e-6
    assert t.exp[0] == 1 << EXP_FRAC and t.exp[-1] == 0          # EXP_REACH: the table ends on a 0
    for k in range(*LOG_SCALE_RANGE):
        v = math.log(math.expm1(math.exp((k + 0.5) / LOG_SCALE_STEPS) - SCALE_MIN)) * ONE
        assert abs(v - round(v)) > 1e-6


def test_quantize_fixed_matches_the_float_quantizer():
    torch.manual_seed(0)
    raw = torch.randn(20000, 3, 3, dtype=torch.float64) * torch.tensor([3.0, 20.0, 4.0]).view(1, 3, 1)
    ints = torch.round(raw * ONE).long()
    got, want = quantize_fixed(ints, FRAC), quantize_gmm(ints.double() / ONE)
    for i, steps in ((0, 8), (1, 32)):          # logits, means: equal except at ties (x.5 steps),
        unit = ONE // steps                     # which round half up here, half to even in float
        tie = ints[:, i] % unit == unit // 2
        assert torch.equal(got[i][~tie], want[i][~tie])
        assert (got[i][tie] - want[i][tie]).abs().max() <= 1
    assert (got[2] - want[2]).abs().max() <= 1                  # log-scales: float32 log near ties
    assert (got[2] != want[2]).float().mean() < 1e-3


def test_affine_is_independent_of_summation_order():
    torch.manual_seed(0)
    lin = torch.nn.Linear(300, 40)
    x = torch.round(torch.randn(64, 300, dtype=torch.float64) * 3 * ONE)
    fixed = Affine(lin)
    perm = torch.randperm(300)
    shuffled = Affine(lin)
    shuffled.w = shuffled.w[perm]                          # same terms, summed in another order
    assert torch.equal(fixed(x), shuffled(x[:, perm]))
    # the exact integer result, term by term in Python
    row, w, b = x[0].long().tolist(), fixed.w.long().t().tolist(), fixed.b.long().tolist()
    want = [max(-2048 * ONE, min(2048 * ONE, (sum(r * c for r, c in zip(row, wo)) + bo + (1 << (fixed.shift - 1)))
                                 >> fixed.shift)) for wo, bo in zip(w, b)]
    assert fixed(x[:1])[0].long().tolist() == want


@pytest.fixture(scope="module")
def coded_inputs(default_engine):
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))[:128, :192]
    y, z = default_engine.analyze(to_input(rgb))
    return default_engine.model, torch.round(y), torch.round(z)


def _params_by_schedule(net, psi, slabs, cached=True):
    got = []

    def code_group(g, raw):
        got.append(raw)
        return slabs[:, g]
    schedule.run(net, psi, code_group, cached=cached)
    return torch.stack(got, 1)


def test_schedule_batch_and_threads_give_identical_integers(coded_inputs):
    m, y_hat, z_hat = coded_inputs
    net, hyper = FixedPointContext(m.context_model), FixedPointHyper(m.h_s)
    psi = hyper(z_hat)
    slabs = egr(y_hat.long(), m.cfg.N_cs)
    cached = _params_by_schedule(net, psi, slabs)
    assert cached.dtype == torch.int64
    assert torch.equal(_params_by_schedule(net, psi, slabs, cached=False), cached)
    one_pass = net.params(net.context(slabs[:, :-1]), net.hyper_slabs(psi)[:, [g % 2 for g in range(1, 8)]])
    assert torch.equal(one_pass, cached[:, 1:])
    # a batch of two different inputs gives each one's integers
    flipped = torch.flip(y_hat, [3])
    psi2 = torch.cat([psi, psi.flip(3)])
    both = _params_by_schedule(net, psi2, egr(torch.cat([y_hat, flipped]).long(), m.cfg.N_cs))
    assert torch.equal(both[:1], cached)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert torch.equal(_params_by_schedule(net, hyper(z_hat), slabs), cached)
    finally:
        torch.set_num_threads(threads)


def _reordered_matmul(a, b):
    """a @ b with the reduction split into three chunks summed in reverse order."""
    k = a.shape[-1]
    cuts = [0, k // 3, 2 * k // 3, k]
    parts = [torch.ops.aten.matmul(a[..., s:e], b[..., s:e, :]) for s, e in zip(cuts, cuts[1:])]
    return parts[2] + parts[1] + parts[0]


def test_another_summation_order_changes_float_bits_but_not_the_integers(coded_inputs, monkeypatch):
    m, y_hat, z_hat = coded_inputs
    net, psi = FixedPointContext(m.context_model), FixedPointHyper(m.h_s)(z_hat)
    slabs = egr(y_hat.long(), m.cfg.N_cs)
    ref = _params_by_schedule(net, psi, slabs)
    a, b = torch.randn(64, 96), torch.randn(96, 64)
    float_ref = torch.matmul(a, b)
    calls = []
    monkeypatch.setattr(torch, "matmul", lambda x, w: calls.append(1) or _reordered_matmul(x, w))
    assert not torch.equal(torch.matmul(a, b), float_ref)       # float32: other bits
    assert torch.equal(_params_by_schedule(net, psi, slabs), ref)
    assert len(calls) > 100                                     # every fixed-point matmul went through it


def test_fixed_point_parameters_are_close_to_the_float_ones(coded_inputs):
    m, y_hat, z_hat = coded_inputs
    net, psi = FixedPointContext(m.context_model), FixedPointHyper(m.h_s)(z_hat)
    slabs = egr(y_hat.long(), m.cfg.N_cs)
    fixed_q = quantize_fixed(_params_by_schedule(net, psi, slabs).reshape(-1, 3, m.cfg.k_m), FRAC)
    with torch.no_grad():
        float_raw = _params_by_schedule(m.context_model, m.h_s(z_hat), slabs.float())
    float_q = quantize_gmm(float_raw.reshape(-1, 3, m.cfg.k_m))
    for got, want in zip(fixed_q, float_q):
        assert (got - want).abs().max() <= 2
        assert (got != want).float().mean() < 0.02


def test_weights_change_rebuilds_the_fixed_point_copy():
    cem = ECFModel(Config.from_name("tiny")).context_model
    first = cem.fixed_point()
    assert cem.fixed_point() is first
    with torch.no_grad():
        cem.entropy_params[0].weight.add_(0.5)
    assert cem.fixed_point() is not first


# -- the C loops (csrc/fixedpoint.c) against the PyTorch ops --------------------------------

def _c_loops_or_skip():
    from ecf_engine import fixedpoint, ops
    if fixedpoint.fixed_loops(torch.zeros(1, dtype=torch.float64)) is None:
        pytest.skip(f"fixed-point C loops unavailable: {ops.last_run()[('fixedpoint', 'cpu')][1]}")


def _both(monkeypatch, fn):
    """fn() with the PyTorch ops, then with the C loops."""
    monkeypatch.setenv("ECF_BACKEND", "torch")
    ref = fn()
    monkeypatch.setenv("ECF_BACKEND", "auto")
    return ref, fn()


def test_c_loops_give_the_same_integers_op_by_op(monkeypatch):
    _c_loops_or_skip()
    torch.manual_seed(0)
    ints = lambda *shape, scale=4: torch.round(torch.randn(*shape, dtype=torch.float64) * scale * ONE)
    norm = torch.nn.LayerNorm(96)
    with torch.no_grad():
        norm.weight.uniform_(0.2, 3)
        norm.bias.uniform_(-1, 1)
    x = ints(50, 96)
    x[0] = 7                                                     # a constant row: variance 0, eps alone
    a, b = _both(monkeypatch, lambda: LayerNorm(norm)(x.clone()))
    assert torch.equal(a, b)
    tables = Tables()
    x = ints(5000, scale=6)
    a, b = _both(monkeypatch, lambda: tables.gelu_(x.clone()))
    assert torch.equal(a, b)
    for layer, shape in ((torch.nn.Linear(96, 40), (7, 96)), (torch.nn.Conv2d(6, 5, 3, padding=1), (2, 6, 5, 7)),
                         (torch.nn.ConvTranspose2d(6, 5, 5, 2, 2, 1), (1, 6, 3, 4))):
        x = ints(*shape)
        a, b = _both(monkeypatch, lambda: Affine(layer)(x.clone()))
        assert torch.equal(a, b)
    B, nW, h, Nq, Nk, dh = 2, 3, 2, 4, 9, 5
    q, k, v = ints(B, nW, h, Nq, dh), ints(B, nW, h, Nk, dh), ints(B, nW, h, Nk, dh, scale=30)
    bias = ints(h, Nq, Nk, scale=1)
    causal, key_valid = torch.rand(Nq, Nk) > 0.3, torch.rand(nW, Nk) > 0.2
    causal[:, 0] = key_valid[:, 0] = True                        # every query sees a key
    a, b = _both(monkeypatch, lambda: attend(q, k, v, bias, causal, key_valid, tables))
    assert torch.equal(a, b)


def test_c_loops_give_the_same_parameters_end_to_end(coded_inputs, monkeypatch):
    _c_loops_or_skip()
    m, y_hat, z_hat = coded_inputs
    net, hyper = FixedPointContext(m.context_model), FixedPointHyper(m.h_s)
    slabs = egr(y_hat.long(), m.cfg.N_cs)
    a, b = _both(monkeypatch, lambda: _params_by_schedule(net, hyper(z_hat), slabs))
    assert torch.equal(a, b)
