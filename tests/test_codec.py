"""End-to-end coding with the tiny seeded model: exactness, determinism, schedules."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ecf_engine
from ecf_engine import schedule
from ecf_engine.detmath import thread_invariant_kernels
from ecf_engine.egr import egr, egr_inverse
from ecf_engine.engine import Engine
from ecf_engine.model import PAD
from ecf_engine.weights import load_weights

from conftest import smooth_image, tiny_model


def params_as_slabs(raw: torch.Tensor, n_cs: int) -> torch.Tensor:
    """Training-forward params (B, M, H, W, 3, k) -> per coding group (B, G, H, W/2, p*3*k)."""
    B, M, H, W = raw.shape[:4]
    return egr(raw.flatten(-2).permute(0, 1, 4, 2, 3).reshape(B, -1, H, W), n_cs)


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (64, 64), (515, 770)])
def test_decode_equals_models_own_reconstruction(tiny_engine, size):
    rgb = smooth_image(*size, seed=size[0])
    bits = tiny_engine.encode(rgb)
    out, stats = tiny_engine.decode_with_stats(bits)
    H, W = size
    x = F.pad(torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255), (0, -W % PAD, 0, -H % PAD), mode="replicate")
    with torch.no_grad(), thread_invariant_kernels():     # the encoder's convolution setting: with
        y_ref = torch.round(tiny_engine.model.g_a(x))    # oneDNN, an AVX2 CPU rounded one y differently
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    assert torch.equal(stats["y_hat"], y_ref)
    assert np.array_equal(out, tiny_engine.reconstruct(rgb))


def test_latents_are_not_trivial(tiny_engine):
    """Guards the fixture: the coded latents must exercise many symbols."""
    _, stats = tiny_engine.encode_with_stats(smooth_image(128, 128))
    assert stats["y_hat"].unique().numel() > 10


def test_decoding_is_repeatable_and_thread_count_independent(tiny_engine):
    rgb = smooth_image(96, 160, seed=3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        bits2 = tiny_engine.encode(rgb)
        a = tiny_engine.decode(bits2)
        b = tiny_engine.decode(bits2)
        torch.set_num_threads(1)
        bits1 = tiny_engine.encode(rgb)
        c = tiny_engine.decode(bits2)
    finally:
        torch.set_num_threads(old)
    assert bits1 == bits2
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_cached_and_uncached_schedules_agree():
    model, mid = tiny_model(seed=1)
    rgb = smooth_image(128, 192, seed=5)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255)
    with torch.no_grad():
        y = model.g_a(x)
        psi = model.h_s(torch.round(model.h_a(y)))
    slabs = egr(torch.round(y), model.cfg.N_cs)
    params = {}
    for cached in (True, False):
        raws = []

        def code_group(g, raw):
            raws.append(raw)
            return slabs[:, g]
        schedule.run(model.context_model, psi, code_group, cached=cached)
        params[cached] = torch.stack(raws)
    assert params[True].shape[0] == model.cfg.groups
    assert torch.allclose(params[True], params[False], atol=1e-5, rtol=0)

    # both equal the training forward pass over the whole latent
    with torch.no_grad():
        full = params_as_slabs(model.context_model.raw_params(torch.round(y), psi), model.cfg.N_cs)
    scheduled = params[True][:, 0].flatten(-3)                       # (G, H, W2, p*3*k)
    assert torch.allclose(scheduled, full[0], atol=1e-5, rtol=0)

    bits = {c: Engine(model, mid, cached=c).encode(rgb) for c in (True, False)}
    assert bits[True] == bits[False]
    assert np.array_equal(Engine(model, mid, cached=False).decode(bits[True]),
                          Engine(model, mid, cached=True).decode(bits[True]))


def test_seven_context_steps_for_paper_grouping():
    cfg = ecf_engine.Config.from_name("paper")
    assert cfg.groups - 1 == 7          # 2 * N_cs - 1 context-model steps after the first group


def test_causality_later_groups_never_change_earlier_parameters():
    model, _ = tiny_model(seed=2)
    cfg = model.cfg
    torch.manual_seed(0)
    y = torch.round(torch.randn(1, cfg.M, 12, 16) * 3)
    psi = torch.randn(1, 2 * cfg.M, 12, 16)

    def params_by_group(y):
        with torch.no_grad():
            return params_as_slabs(model.context_model.raw_params(y, psi), cfg.N_cs)
    base = params_by_group(y)
    slabs = egr(y, cfg.N_cs)
    for g in range(cfg.groups):
        changed = slabs.clone()
        changed[:, g] += 7.0
        other = params_by_group(egr_inverse(changed, cfg.N_cs))
        assert torch.allclose(other[:, :g + 1], base[:, :g + 1], atol=1e-6, rtol=0), f"group {g} leaks"
        if g + 1 < cfg.groups:
            assert not torch.allclose(other[:, g + 1:], base[:, g + 1:]), "later groups should react"



@pytest.mark.parametrize("preset", ["paper", "paper-hr"])
def test_paper_presets_code_an_image(preset):
    engine = ecf_engine.load(preset)
    rgb = smooth_image(64, 64, seed=11)
    bits, stats = engine.encode_with_stats(rgb)
    out, dec = engine.decode_with_stats(bits)
    assert out.shape == (64, 64, 3) and torch.equal(stats["y_hat"], dec["y_hat"])


@pytest.mark.parametrize("part", ["g_a", "g_s"])
def test_tiled_transforms_equal_whole_map(part):
    """g_a and g_s on overlapping tiles: same values as on the whole map, also at sizes
    whose last tiles are partial; with no halo the tile borders show, so the check can fail."""
    model, _ = load_weights("small", seed=0)
    net = getattr(model, part)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 144, 208, generator=gen) if part == "g_a" else torch.randn(1, model.cfg.M, 9, 13, generator=gen) * 4
    with torch.no_grad(), thread_invariant_kernels():
        net.tile = None
        whole = net(x)
        net.tile = 32 if part == "g_a" else 8
        tiled = net(x)
        net.halo = 0
        seams = net(x)
    assert tiled.shape == whole.shape == ((1, model.cfg.M, 9, 13) if part == "g_a" else (1, 3, 144, 208))
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    assert (seams - whole).abs().max() > 1e-3


def test_tiled_synthesis_is_thread_count_independent():
    model, _ = tiny_model(seed=2)
    model.g_s.tile = 8
    y = torch.randn(1, model.cfg.M, 12, 10) * 4
    old = torch.get_num_threads()
    try:
        with torch.no_grad(), thread_invariant_kernels():
            torch.set_num_threads(2)
            a = model.g_s(y)
            torch.set_num_threads(1)
            b = model.g_s(y)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b)
