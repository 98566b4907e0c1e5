"""Formats 3 and 4: integer GMM tables and rANS substreams, the C code against the PyTorch /
Python reference, and hostile payloads."""
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
    for version in rans.FORMATS:
        x0 = rans.initial_state(version)
        assert np.array_equal(rans.rans_encode(s1, f1, version), rans._encode_reference(s1, f1, x0))


def test_c_code_has_the_constants_of_the_python_side():
    """csrc/rans.c's #defines against rans.py / entropy.py, the one source of truth; a library
    that differs is refused (the Python coder runs)."""
    c_or_skip()
    assert rans.c_constants(rans._lib()) == rans.C_CONSTANTS


def test_a_library_with_other_constants_is_refused(monkeypatch):
    c_or_skip()
    lib = rans._lib()
    monkeypatch.setitem(rans.C_CONSTANTS, "PREC", rans.PREC + 1)
    monkeypatch.setattr(rans, "_checked", {})
    from ecf_engine import ops
    monkeypatch.setattr(ops, "_warned", set())
    with pytest.warns(RuntimeWarning, match="does not match"):
        assert rans._lib() is None
    assert ops.last_run()[("rans", "cpu")][0] == "python"
    monkeypatch.undo()
    assert rans._lib() is lib


def test_values_beyond_the_escape_code_are_refused_on_both_paths(monkeypatch):
    q = random_params(4)
    too_far = torch.tensor([0, 0, 0, 1 << 42])
    with pytest.raises(ValueError, match="escape code"):
        rans._symbols_reference(q, too_far)
    if rans._lib() is not None:
        with pytest.raises(ValueError, match="escape code"):
            rans.symbols(q, too_far)


def _code(q, values, S, version=rans.FORMATS[-1]):
    offsets = rans.band_offsets(len(values), 1, S)
    enc = rans.SubstreamEncoder(S, version)
    for s in range(S):
        a, b = offsets[s], offsets[s + 1]
        enc.add(s, tuple(t[a:b] for t in q), values[a:b])
    return enc.finish(), offsets


@pytest.mark.parametrize("version", rans.FORMATS)
@pytest.mark.parametrize("S", [1, 3, 8])
def test_substreams_round_trip_on_c_reference_and_one_thread(S, version):
    c_or_skip()
    q = random_params(1200, seed=S)
    values = random_values(q, seed=S)
    data, offsets = _code(q, values, S, version)
    decoded = []
    for use_c, threads in ((True, 2), (True, 1), (False, 1)):
        dec = rans.SubstreamDecoder(data, S, version)
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


def test_small_states_and_empty_substreams():
    """Format 4 starts the encoder at state 1: a few symbols never leave the start-up phase,
    and a substream without symbols is the two words of state 1."""
    c_or_skip()
    q = random_params(100, seed=3)
    values = random_values(q, seed=3)
    q, values = tuple(t[60:] for t in q), values[60:]        # no escape codes
    for n in (0, 1, 2, 5, 40):
        part = tuple(t[:n] for t in q)
        enc = rans.SubstreamEncoder(3)
        enc.add(1, part, values[:n])
        data = enc.finish()
        assert data[0] == 2                                   # substream 0: no symbols, just state 1
        if n == 0:
            assert data == b"\x02\x02" + np.array([1, 0] * 3, "<u4").tobytes()
        if n <= 2:                                            # still in the start-up phase: no words
            assert len(data) == 2 + 3 * 8
        dec = rans.SubstreamDecoder(data, 3)
        offsets = np.array([0, 0, n, n])
        for lib in (rans._lib(), None):
            dec.lib, dec.state[:] = lib, rans.SubstreamDecoder(data, 3).state
            assert torch.equal(dec.decode_group(part, offsets), values[:n])
            dec.check_finished()


def test_format_4_is_smaller_by_the_substream_overhead():
    c_or_skip()
    q = random_params(4000, seed=5)
    values = random_values(q, seed=5)
    v3, _ = _code(q, values, 4, version=3)
    v4, _ = _code(q, values, 4, version=4)
    saved = len(v3) - len(v4)
    assert 4 + 4 * 4 - 3 * 2 <= saved <= 4 + 4 * 4 - 3 * 2 + 4 * 8     # table, plus 0-8 bytes per flush


@pytest.mark.parametrize("version", rans.FORMATS)
def test_hostile_payloads_raise_bitstream_errors(version):
    c_or_skip()
    q = random_params(300)
    values = random_values(q)
    data, offsets = _code(q, values, 2, version)
    table = 12 if version == 3 else rans._read_varints(data, 1)[1]          # bytes before the words
    words = np.frombuffer(data[table:], dtype="<u4").copy()
    if version == 3:
        bad = {
            "empty": b"",
            "not whole words": data[:5],
            "zero substreams": np.array([0], "<u4").tobytes(),
            "another substream count": np.array([1000], "<u4").tobytes() + data[4:],
            "lengths do not add up": data[:-4],
            "short substream": np.array([2, 1, 1, 7, 7], "<u4").tobytes(),
        }
    else:
        bad = {
            "empty": b"",
            "varint cut off": b"\x80",
            "varint too long": b"\xff" * 6 + data,
            "length beyond the payload": b"\xff\x7f" + data[table:],
            "not whole words": data[:-1],
            "short substream": b"\x01" + np.array([7, 7, 7], "<u4").tobytes(),
        }
    for name, payload in bad.items():
        with pytest.raises(BitstreamError):
            rans.SubstreamDecoder(payload, 2, version)
    rng = np.random.default_rng(0)
    failures = 0
    for _ in range(200):                                     # random damage inside the substreams
        w = words.copy()
        w[rng.integers(0, len(w), size=3)] ^= rng.integers(1, 1 << 32, size=3, dtype=np.uint64).astype(np.uint32)
        try:
            dec = rans.SubstreamDecoder(data[:table] + w.tobytes(), 2, version)
            out = dec.decode_group(q, offsets)
            dec.check_finished()
            assert out.shape == values.shape                 # undetected: still the declared shape
        except BitstreamError:
            failures += 1
    assert failures > 150                                    # the state check catches nearly all


def test_engine_uses_several_substreams_and_they_decode(default_engine):
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))[:256, :384]        # 16 latent rows: 2 substreams
    bits, stats = default_engine.encode_with_stats(rgb)
    y = bits[-4 - stats["y_bytes"]:-4]
    assert rans.substream_count(16) == 2
    words, offsets = rans.unpack(y, 2)
    assert len(offsets) == 3 and offsets[1] > 2 and offsets[2] - offsets[1] > 2     # both carry symbols
    assert np.array_equal(default_engine.decode(bits), default_engine.reconstruct(rgb))


def test_one_stream_for_a_large_batch():
    """compress() puts every item's bands into one payload: 12 items x 2 bands = 24 substreams."""
    from ecf_engine import Config
    from ecf_engine.context_entropy import ContextEntropyModel
    torch.manual_seed(0)
    cem = ContextEntropyModel(Config.from_name("tiny")).eval()
    y = torch.randn(12, 16, 16, 8) * 4
    psi = torch.randn(12, 32, 16, 8)
    for version in rans.FORMATS:
        data, y_hat = cem.compress(y, psi, version=version)
        assert len(rans.unpack(data, 12 * rans.substream_count(16), version)[1]) == 12 * 2 + 1
        assert torch.equal(cem.decompress(data, psi, version=version), y_hat)


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
    for version in rans.FORMATS:
        plain, _ = cem.compress_each(y, psi, version=version, overlap=False)
        assert cem.compress_each(y, psi, version=version, overlap=True)[0] == plain
