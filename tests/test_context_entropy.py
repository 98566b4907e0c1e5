"""The entropy-model component on a foreign latent (not produced by our transforms)."""
import pytest
import torch

from ecf_engine import Config, ContextEntropyModel, schedule
from ecf_engine.entropy import gmm_from_raw
from ecf_engine.errors import BitstreamError


@pytest.fixture(scope="module")
def cem():
    torch.manual_seed(0)
    return ContextEntropyModel(Config.from_name("tiny")).eval()


def sample_from_model(cem, psi, generator):
    """Draw y group by group from the model's own GMMs (ancestral sampling through the schedule)."""
    def code_group(g, raw):
        w, mu, sigma = gmm_from_raw(raw)
        k = torch.multinomial(w.reshape(-1, w.shape[-1]), 1, generator=generator).view(w.shape[:-1] + (1,))
        noise = torch.randn(k.shape, generator=generator)
        return torch.round(mu.gather(-1, k) + sigma.gather(-1, k) * noise)[..., 0]
    return schedule.run(cem, psi, code_group)


def test_compress_decompress_batch(cem):
    torch.manual_seed(1)
    y = torch.randn(2, 16, 6, 10) * 4
    psi = torch.randn(2, 32, 6, 10)
    data, y_hat = cem.compress(y, psi)
    assert torch.equal(y_hat, torch.round(y))
    assert torch.equal(cem.decompress(data, psi), y_hat)


def test_real_size_matches_the_models_estimate(cem):
    gen = torch.Generator().manual_seed(3)
    psi = torch.randn(1, 32, 32, 48, generator=gen)
    y = sample_from_model(cem, psi, gen)
    stats = {}
    data, _ = cem.compress(y, psi, stats=stats)
    assert stats["estimated_bits"] > 10_000
    assert abs(8 * len(data) / stats["estimated_bits"] - 1) < 0.01, (8 * len(data), stats["estimated_bits"])


def test_training_likelihoods(cem):
    y = torch.randn(1, 16, 4, 8, requires_grad=True)
    p = cem(y + torch.empty_like(y).uniform_(-0.5, 0.5), torch.randn(1, 32, 4, 8))
    assert p.shape == y.shape and bool(((p > 0) & (p <= 1)).all())
    (-torch.log2(p).sum()).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_wrong_payload_is_rejected(cem):
    psi = torch.randn(1, 32, 4, 8)
    data, _ = cem.compress(torch.randn(1, 16, 4, 8) * 3, psi)
    with pytest.raises(BitstreamError):
        cem.decompress(data + bytes(64), psi)


def test_table_bits_match_the_real_size(cem):
    gen = torch.Generator().manual_seed(5)
    psi = torch.randn(1, 32, 16, 24, generator=gen)
    y = torch.round(torch.randn(1, 16, 16, 24, generator=gen) * 6)     # far from the model: many escapes
    stats = {}
    data, _ = cem.compress(y, psi, stats=stats)
    assert abs(8 * len(data) / stats["table_bits"] - 1) < 0.01
