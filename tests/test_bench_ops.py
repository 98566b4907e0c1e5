"""pytest-benchmark timings of the hot ops, Kodak-sized (768x512 -> latent 48x32) with the
`small` preset. Quick in CI (few rounds, results not asserted); for full statistics run

    python -m pytest tests/test_bench_ops.py --benchmark-only --benchmark-min-rounds=20 \
        --benchmark-json=benchmarks/results/ops.json
"""
import constriction
import pytest
import torch

from ecf_engine import Config, ContextEntropyModel, schedule
from ecf_engine.egr import egr, egr_inverse
from ecf_engine.entropy import decode_gmm, encode_gmm

H, W = 32, 48


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = Config.from_name("small")
    cem = ContextEntropyModel(cfg).eval()
    y = torch.round(torch.randn(1, cfg.M, H, W) * 2)
    psi = torch.randn(1, 2 * cfg.M, H, W)
    return cfg, cem, y, psi


def test_egr_roundtrip(benchmark, setup):
    cfg, _, y, _ = setup
    out = benchmark(lambda: egr_inverse(egr(y, cfg.N_cs), cfg.N_cs))
    assert torch.equal(out, y)


def test_context_model_seven_steps_cached(benchmark, setup):
    cfg, cem, y, psi = setup
    slabs = egr(y, cfg.N_cs)
    out = benchmark.pedantic(schedule.run, args=(cem, psi, lambda g, raw: slabs[:, g]), rounds=3, iterations=1)
    assert torch.equal(out, y)


def test_gmm_coding(benchmark, setup):
    cfg, cem, y, psi = setup
    raw = torch.randn(H * W // 2 * cfg.p_cs, 3, cfg.k_m)
    values = torch.round(torch.randn(raw.shape[0]) * 2).to(torch.int64)

    def roundtrip():
        enc = constriction.stream.queue.RangeEncoder()
        encode_gmm(enc, values, raw)
        return decode_gmm(constriction.stream.queue.RangeDecoder(enc.get_compressed()), raw)
    out = benchmark.pedantic(roundtrip, rounds=3, iterations=1)
    assert torch.equal(out, values)
