"""Analysis / synthesis transforms and the hyperprior transforms (paper Sec. IV-A)."""
from __future__ import annotations

import torch
from torch import nn

from .config import Config
from .layers import GDN, AttentionModule, ResidualBlock, conv, deconv


class TiledSequential(nn.Sequential):
    """g_a / g_s, run tile by tile where the feature maps are large.

    The first `split` layers run on the whole map; the rest runs on tiles of `tile` x
    `tile` positions of the map they take, each cut with `halo` extra positions on every
    side that are dropped again. `halo` exceeds the receptive radius of the tiled part,
    so the result is the same function of the input (`tests/test_codec.py`; on our CPU
    even the same bits as the untiled run). Small working sets are what make this faster
    on a CPU, most at large sizes (`benchmarks/speed.py`), and memory at full channel
    count no longer grows with the whole image. The tile geometry depends only on the
    image size, so results stay deterministic. `tile = None` runs the whole map at once,
    and so do GPUs, which want large launches and have the memory.
    """

    def __init__(self, *layers: nn.Module, split: int = 0, tile: int | None = None, halo: int = 0):
        super().__init__(*layers)
        self.split, self.tile, self.halo = split, tile, halo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        x = _run(layers[:self.split], x)
        tail = layers[self.split:]
        H, W = x.shape[-2:]
        t, h = self.tile, self.halo
        if t is None or x.device.type != "cpu" or (H <= t and W <= t):
            return _run(tail, x)
        up = down = 1
        for m in tail:
            if isinstance(m, nn.ConvTranspose2d):
                up *= m.stride[0]
            elif isinstance(m, nn.Conv2d):
                down *= m.stride[0]
        rows = []
        for r0 in range(0, H, t):
            r1, a = min(H, r0 + t), max(0, r0 - h)
            row = []
            for c0 in range(0, W, t):
                c1, c = min(W, c0 + t), max(0, c0 - h)
                out = _run(tail, x[..., a:min(H, r1 + h), c:min(W, c1 + h)])
                row.append(out[..., (r0 - a) * up // down:(r1 - a) * up // down,
                               (c0 - c) * up // down:(c1 - c) * up // down])
            rows.append(torch.cat(row, dim=-1))
        return torch.cat(rows, dim=-2)


def _run(layers: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def analysis(cfg: Config) -> TiledSequential:
    """g_a: (B, 3, H, W) in [0, 1] -> y (B, M, H/16, W/16).

    Runs on tiles of 512 x 512 pixels with a 32-pixel halo (a multiple of 16, so tiles
    start on the output grid): the receptive radius is 27 pixels (1 + 2 for the first
    two convs, 3 x 4 for the attention module at 1/4 scale, 4 + 8 for the last two).
    """
    N = cfg.N
    return TiledSequential(
        conv(3, N, 3, 2), GDN(N),
        conv(N, N, 3, 2), GDN(N),
        AttentionModule(N),
        conv(N, N, 3, 2), GDN(N),
        conv(N, cfg.M, 3, 2), tile=512, halo=32)


def synthesis(cfg: Config) -> TiledSequential:
    """g_s: y_hat (B, M, h, w) -> (B, 3, 16h, 16w), mirror of g_a with residual blocks first.

    Up to 1/4 scale (~10 % of the MACs) it runs on the whole map; from the attention
    module on, on tiles of 64 x 64 positions of the 1/4-scale map with a halo of 6: the
    receptive radius there is under 5 (3 for the attention module's three 3x3 convs per
    branch, 1 and 1/2 for the two deconvolutions).
    """
    N = cfg.N
    return TiledSequential(
        ResidualBlock(cfg.M),
        deconv(cfg.M, N), GDN(N, inverse=True),
        deconv(N, N), GDN(N, inverse=True),
        AttentionModule(N),
        deconv(N, N), GDN(N, inverse=True),
        deconv(N, 3), split=5, tile=64, halo=6)


def hyper_analysis(cfg: Config) -> nn.Sequential:
    """h_a: y (B, M, h, w) -> z (B, N, h/4, w/4), 5x5 convs."""
    N = cfg.N
    return nn.Sequential(
        conv(cfg.M, N, 5, 1), nn.LeakyReLU(inplace=True),
        conv(N, N, 5, 2), nn.LeakyReLU(inplace=True),
        conv(N, N, 5, 2))


def hyper_synthesis(cfg: Config) -> nn.Sequential:
    """h_s: z_hat (B, N, h/4, w/4) -> hyper features psi (B, 2M, h, w), 5x5 (de)convs."""
    N, M = cfg.N, cfg.M
    return nn.Sequential(
        deconv(N, N, 5, 2), nn.LeakyReLU(inplace=True),
        deconv(N, 3 * M // 2, 5, 2), nn.LeakyReLU(inplace=True),
        conv(3 * M // 2, 2 * M, 5, 1))
