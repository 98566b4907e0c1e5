import pytest
import torch

from ecf_engine.egr import egr, egr_inverse


@pytest.mark.parametrize("shape,n_cs", [((1, 8, 4, 6), 4), ((2, 16, 7, 10), 2), ((1, 12, 1, 2), 3), ((3, 4, 5, 4), 1)])
def test_inverse_of_egr_is_identity(shape, n_cs):
    y = torch.randn(shape)
    slabs = egr(y, n_cs)
    B, M, H, W = shape
    assert slabs.shape == (B, 2 * n_cs, H, W // 2, M // n_cs)
    assert torch.equal(egr_inverse(slabs, n_cs), y)


def test_slabs_hold_checkerboard_groups_in_spatial_first_order():
    B, M, H, W, n_cs = 1, 6, 4, 6, 3
    p = M // n_cs
    # encode (channel, h, w) in the value so every element is identifiable
    c, h, w = torch.meshgrid(torch.arange(M), torch.arange(H), torch.arange(W), indexing="ij")
    y = (c * 10000 + h * 100 + w).float()[None]
    slabs = egr(y, n_cs)
    for g in range(2 * n_cs):
        seg, anchor = g // 2, g % 2 == 0
        vals = slabs[0, g]
        ch = (vals // 10000).long()
        hh = (vals % 10000 // 100).long()
        ww = (vals % 100).long()
        assert torch.equal(ch.unique(), torch.arange(seg * p, (seg + 1) * p))
        assert bool((((hh + ww) % 2 == 0) == anchor).all())
        assert vals.numel() == p * H * W // 2


def test_odd_width_is_rejected():
    with pytest.raises(ValueError, match="even width"):
        egr(torch.zeros(1, 4, 4, 5), 2)
