"""The training paths (hand-written GDN backward, written-out attention) against their
references: same values and gradients in float32, and the coder never takes them."""
import pytest
import torch

from ecf_engine import attention
from ecf_engine.config import PRESETS
from ecf_engine.contextformer import WindowGrid
from ecf_engine.layers import GDN
from ecf_engine.model import ECFModel


def _grads(module, x, fn):
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = fn(x)
    w = torch.linspace(-1, 1, y.numel()).view(y.shape)           # a loss that weighs every output differently
    (y * w).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gdn_training_path_matches_reference(inverse, channels_last):
    torch.manual_seed(0)
    gdn = GDN(12, inverse=inverse)
    with torch.no_grad():                       # off the identity-like initialisation
        gdn.beta_sqrt.uniform_(0.5, 1.5)
        gdn.gamma_sqrt.uniform_(0.0, 0.6)
    x = torch.randn(2, 12, 7, 9) * 2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y, gx, gp = _grads(gdn, x, gdn)
    y_ref, gx_ref, gp_ref = _grads(gdn, x, gdn.reference)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(gp, gp_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gdn_without_gradients_is_the_reference_bit_for_bit():
    gdn = GDN(8, inverse=True)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(gdn(x), gdn.reference(x))


def test_gdn_training_path_keeps_fp32_under_bf16_autocast():
    gdn = GDN(8)
    x = torch.randn(1, 8, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gdn(x)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shifted", [False, True])
def test_written_out_attention_matches_sdpa_with_padding_and_causal_mask(shifted):
    torch.manual_seed(1)
    heads, dh, S = 2, 4, 3
    grid = WindowGrid(5, 3, 4, shifted)                   # 5 x 3 latents in 4 x 2 windows: padding in every row
    N = S * grid.T
    slab = torch.arange(N) // grid.T
    causal = torch.zeros(N, N).masked_fill(slab[None, :] > slab[:, None], float("-inf"))  # slabs see slabs <= own
    bias = torch.randn(heads, N, N) + causal
    key_mask = grid.key_mask.repeat(1, S)
    q, k, v = (torch.randn(2, grid.n_windows, heads, N, dh, requires_grad=True) for _ in range(3))
    out = attention._attend_explicit(q, k, v, bias, key_mask)
    ref = attention._attend_sdpa(q, k, v, bias, key_mask)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_training_forward_matches_the_coders_forward():
    """The whole tiny model: with gradients (training paths) and without (references)."""
    torch.manual_seed(2)
    model = ECFModel(PRESETS["tiny"]).eval()
    x = torch.rand(1, 3, 64, 128)
    torch.manual_seed(3)
    with torch.no_grad():
        ref = model(x)                          # noisy latents: no rounding boundary to cross
    torch.manual_seed(3)
    out = model(x)
    assert out["x_hat"].requires_grad
    torch.testing.assert_close(out["x_hat"].detach(), ref["x_hat"], rtol=1e-4, atol=1e-5)
    for a, b in zip(out["likelihoods"].values(), ref["likelihoods"].values()):
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compiled_training_step_matches_eager(monkeypatch):
    """--compile: the loss and gradients of torch.compile'd tiny-vr against eager (the
    compiled noise drawn as eager draws it)."""
    from ecf_engine.model import rate_distortion_loss
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch.manual_seed(4)
    model = ECFModel(PRESETS["tiny-vr"]).train().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    q, lmbda = torch.tensor([1.5, 6.0]), torch.tensor([0.003, 0.05])
    runs = []
    for net in (model, torch.compile(model)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(6)
        loss = rate_distortion_loss(net(x, ste=True, quality=q), x, lmbda)["loss"]
        loss.backward()
        runs.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (loss, grad), (loss_c, grad_c) = runs
    assert loss_c == pytest.approx(loss, rel=1e-5)
    assert (grad_c - grad).norm() < 1e-4 * grad.norm()
