import constriction
import numpy as np
import torch

from ecf_engine.entropy import (FactorizedPrior, decode_gmm, decode_table, encode_gmm, encode_table,
                                gmm_likelihood)


def _roundtrip_gmm(values, raw):
    enc = constriction.stream.queue.RangeEncoder()
    encode_gmm(enc, values, raw)
    data = enc.get_compressed()
    dec = constriction.stream.queue.RangeDecoder(data)
    out = decode_gmm(dec, raw)
    assert dec.maybe_exhausted()
    return out, 32 * data.size


def test_gmm_roundtrip_with_escapes_and_rate_close_to_model():
    torch.manual_seed(0)
    n, k = 20000, 3
    raw = torch.randn(n, 3, k)
    raw[:, 1] *= 4          # means
    raw[:, 2] = raw[:, 2] * 2 + 1   # scales from ~0.11 to ~10
    w = torch.softmax(raw[:, 0], -1)
    comp = torch.multinomial(w, 1)[:, 0]
    mu = raw[:, 1].gather(1, comp[:, None])[:, 0]
    sigma = (0.11 + torch.nn.functional.softplus(raw[:, 2])).gather(1, comp[:, None])[:, 0]
    values = torch.round(mu + sigma * torch.randn(n)).to(torch.int64)
    out, bits = _roundtrip_gmm(values, raw)
    assert torch.equal(out, values)
    estimate = -torch.log2(gmm_likelihood(values.double(), raw.double())).sum().item()
    assert abs(bits / estimate - 1) < 0.01, (bits, estimate)

    # far outliers need the escape code: both sides, huge magnitudes
    values[:5] = torch.tensor([1000, -1000, 70000, -(1 << 30), (1 << 30)])
    out, _ = _roundtrip_gmm(values, raw)
    assert torch.equal(out, values)


def test_factorized_table_roundtrip():
    torch.manual_seed(0)
    prior = FactorizedPrior(4)
    R, freqs = prior.frequency_table()
    assert freqs.shape == (4, 2 * R + 1) and bool((freqs >= 1).all())
    values = torch.randint(-3 * R, 3 * R, (4 * 50,))
    rows = freqs.repeat_interleave(50, 0)
    enc = constriction.stream.queue.RangeEncoder()
    encode_table(enc, values, R, rows)
    dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
    assert torch.equal(decode_table(dec, R, rows), values)


def test_likelihoods_are_probabilities():
    torch.manual_seed(0)
    prior = FactorizedPrior(3)
    z = torch.arange(-300, 301).float().view(1, 1, 1, -1).expand(1, 3, 1, -1)
    p = prior.likelihood(z)
    assert bool(((p > 0) & (p <= 1)).all())
    # the whole grid carries (almost) all the mass of each channel
    assert torch.allclose(p.sum(-1), torch.ones(1, 3, 1), atol=1e-3)
    y = torch.arange(-60, 61).double()
    raw = torch.randn(1, 3, 3).double().expand(121, 3, 3)
    assert abs(gmm_likelihood(y, raw).sum().item() - 1) < 1e-6
