"""Format 3: integer GMM tables and rANS substreams, the C code against the PyTorch / Python
reference, and hostile payloads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ecf_engine import rans
from ecf_engine.cli import SAMPLE
from ecf_engine.entropy import quantize_fixed
from ecf_engine.errors import BitstreamError


def c_or_skip():
    if rans._lib() is None:
        from ecf_engine import ops
        pytest.skip(f"C library unavailable: {ops.native()}")


def random_params(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, 3, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 30.0, 3.0]).view(1, 3, 1)
    raw[: n // 10, 2] -= 8                      # the smallest scales
    raw[: n // 20, 1] = raw[: n // 20, 1, :1]   # ... and one mean: the narrowest windows
    raw[n // 10: n // 5, 2] += 8                # the largest: the widest windows
    raw[n // 5: n // 4, 0, 1:] -= 100           # one dominant component
    return quantize_fixed(torch.round(raw * 4096).long(), 12)


def random_values(q, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = q[1].double().mean(-1) / 32
    v = torch.round(mu + torch.randn(len(mu), generator=g, dtype=torch.float64) * 4).long()
    v[:30] += 1000                              # far beyond the window: escape codes
    v[30:60] -= 1 << 23
    return v


def test_lookup_tables_are_far_from_rounding_ties():
    """Any math library within 1e-6 of the true values builds the same integer tables."""
    t = rans.TABLES
    for key in ("expw", "invs", "phi"):
        values = t[key + "_float"]
        assert np.abs(values - np.floor(values) - 0.5).min() > 1e-6, key
    sig = np.delete(t["sig32_float"], -rans.LOG_SCALE_RANGE[0])     # k = 0: 32 * exp(0) = 32 exactly
    assert np.abs(sig - np.round(sig)).min() > 1e-6


def test_c_tables_and_symbols_equal_the_reference():
    c_or_skip()
    q = random_params(4000)
    ref, got = rans.reference_tables(q), rans.c_tables(q)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    c, R, cum = ref
    assert set(R.tolist()) >= {2, 128}                       # narrow and widest windows exercised
    rows = torch.arange(len(R))
    assert torch.equal(cum[rows, 2 * R + 1], torch.full_like(R, rans.TOT))
    steps = cum.diff(dim=1)
    inside = torch.arange(2 * rans.MAX_R + 1)[None, :] <= 2 * R[:, None]
    assert steps[inside].min() >= 1                          # every symbol codable
    values = random_values(q)
    s1, f1 = rans.symbols(q, values)
    s2, f2 = rans._symbols_reference(q, values)
    assert np.array_equal(s1, s2) and np.array_equal(f1, f2)
    assert np.array_equal(rans.rans_encode(s1, f1), rans._encode_reference(s1, f1))


def _code(q, values, S):
    offsets = rans.band_offsets(len(values), 1, S)
    enc = rans.SubstreamEncoder(S)
    for s in range(S):
        a, b = offsets[s], offsets[s + 1]
        enc.add(s, tuple(t[a:b] for t in q), values[a:b])
    return enc.finish(), offsets


@pytest.mark.parametrize("S", [1, 3, 8])
def test_substreams_round_trip_on_c_reference_and_one_thread(S):
    c_or_skip()
    q = random_params(1200, seed=S)
    values = random_values(q, seed=S)
    data, offsets = _code(q, values, S)
    decoded = []
    for use_c, threads in ((True, 2), (True, 1), (False, 1)):
        dec = rans.SubstreamDecoder(data, S)
        if not use_c:
            dec.lib = None
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            decoded.append(dec.decode_group(q, offsets))
        finally:
            torch.set_num_threads(before)
        dec.check_finished()
    for d in decoded:
        assert torch.equal(d, values)


def test_hostile_payloads_raise_bitstream_errors():
    c_or_skip()
    q = random_params(300)
    values = random_values(q)
    data, offsets = _code(q, values, 2)
    words = np.frombuffer(data, dtype="<u4").copy()
    bad = {
        "empty": b"",
        "zero substreams": np.array([0], "<u4").tobytes(),
        "another substream count": np.array([1000], "<u4").tobytes() + data[4:],
        "lengths do not add up": data[:-4],
        "short substream": np.array([2, 1, 1, 7, 7], "<u4").tobytes(),
    }
    for name, payload in bad.items():
        with pytest.raises(BitstreamError):
            rans.SubstreamDecoder(payload, 2)
    rng = np.random.default_rng(0)
    failures = 0
    for _ in range(200):                                     # random damage inside the substreams
        w = words.copy()
        w[rng.integers(3, len(w), size=3)] ^= rng.integers(1, 1 << 32, size=3, dtype=np.uint64).astype(np.uint32)
        try:
            dec = rans.SubstreamDecoder(w.tobytes(), 2)
            out = dec.decode_group(q, offsets)
            dec.check_finished()
            assert out.shape == values.shape                 # undetected: still the declared shape
        except BitstreamError:
            failures += 1
    assert failures > 150                                    # the state check catches nearly all


def test_engine_uses_several_substreams_and_they_decode(default_engine):
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))[:256, :384]        # 16 latent rows: 2 substreams
    bits, stats = default_engine.encode_with_stats(rgb)
    header_y = bits[-4 - stats["y_bytes"]:-4]
    assert int(np.frombuffer(header_y[:4], "<u4")[0]) == rans.substream_count(16) == 2
    assert np.array_equal(default_engine.decode(bits), default_engine.reconstruct(rgb))


def test_one_stream_for_a_large_batch():
    """compress() puts every item's bands into one payload: 12 items x 2 bands = 24 substreams."""
    from ecf_engine import Config
    from ecf_engine.context_entropy import ContextEntropyModel
    torch.manual_seed(0)
    cem = ContextEntropyModel(Config.from_name("tiny")).eval()
    y = torch.randn(12, 16, 16, 8) * 4
    psi = torch.randn(12, 32, 16, 8)
    data, y_hat = cem.compress(y, psi)
    assert int(np.frombuffer(data[:4], "<u4")[0]) == 12 * rans.substream_count(16)
    assert torch.equal(cem.decompress(data, psi), y_hat)


def test_engine_works_without_the_c_library(tiny_engine, monkeypatch):
    """No C compiler: the Python coder writes and reads the very same streams."""
    rgb = (np.random.default_rng(2).random((250, 120, 3)) * 255).astype(np.uint8)    # 2 substreams
    with_c = tiny_engine.encode(rgb)
    monkeypatch.setattr(rans, "_lib", lambda: None)
    assert tiny_engine.encode(rgb) == with_c
    assert np.array_equal(tiny_engine.decode(with_c), tiny_engine.reconstruct(rgb))


def test_overlapped_encoding_gives_the_same_stream():
    """Coding on a worker thread while the network runs (the default off the CPU)."""
    from ecf_engine import Config
    from ecf_engine.context_entropy import ContextEntropyModel
    torch.manual_seed(1)
    cem = ContextEntropyModel(Config.from_name("tiny")).eval()
    y, psi = torch.randn(3, 16, 16, 8) * 4, torch.randn(3, 32, 16, 8)
    for version in (2, 3):
        plain, _ = cem.compress_each(y, psi, version=version, overlap=False)
        assert cem.compress_each(y, psi, version=version, overlap=True)[0] == plain
