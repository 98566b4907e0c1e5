"""z coding (constriction, fixed tables), the escape code both coders share, and the training likelihoods."""
import constriction
import pytest
import torch

from ecf_engine.entropy import (MAX_ESCAPE_BITS, FactorizedPrior, decode_table, encode_table, escape_fields,
                                gmm_likelihood, read_escape)
from ecf_engine.errors import BitstreamError


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


def test_table_roundtrip_with_far_escapes():
    """Values far beyond the window on both sides go through the escape code; the code length
    counts its fields."""
    torch.manual_seed(0)
    R, freqs = FactorizedPrior(2).frequency_table()
    values = torch.tensor([0, 1000, -1000, 70000, -(1 << 30), 1 << 30, 1 << MAX_ESCAPE_BITS, R, -R])
    rows = freqs[torch.arange(len(values)) % 2]
    enc = constriction.stream.queue.RangeEncoder()
    bits = encode_table(enc, values, R, rows)
    data = enc.get_compressed()
    dec = constriction.stream.queue.RangeDecoder(data)
    assert torch.equal(decode_table(dec, R, rows), values) and dec.maybe_exhausted()
    assert abs(32 * data.size - bits) < 64


def test_escape_code_fields_and_limits():
    longest = (1 << (MAX_ESCAPE_BITS + 1)) - 2             # over + 1 has MAX_ESCAPE_BITS bits below its top one
    for over in [0, 1, 2, 65535, 65536, 1 << 20, longest]:
        fields = escape_fields(over)
        assert fields[0] == ((over + 1).bit_length() - 1, 6) and all(0 <= v < 1 << w for v, w in fields)
        it = iter(fields)

        def read(width):
            value, w = next(it)
            assert w == width
            return value
        assert read_escape(read) == over and next(it, None) is None
    with pytest.raises(ValueError, match="escape"):
        escape_fields(longest + 1)                           # the decoder would refuse it: so does the encoder
    with pytest.raises(BitstreamError, match="exceeds the limit"):
        read_escape(lambda width: MAX_ESCAPE_BITS + 1)


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
