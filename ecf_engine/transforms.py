"""Analysis / synthesis transforms and the hyperprior transforms (paper Sec. IV-A)."""
from __future__ import annotations

from torch import nn

from .config import Config
from .layers import GDN, AttentionModule, ResidualBlock, conv, deconv


def analysis(cfg: Config) -> nn.Sequential:
    """g_a: (B, 3, H, W) in [0, 1] -> y (B, M, H/16, W/16)."""
    N = cfg.N
    return nn.Sequential(
        conv(3, N, 3, 2), GDN(N),
        conv(N, N, 3, 2), GDN(N),
        AttentionModule(N),
        conv(N, N, 3, 2), GDN(N),
        conv(N, cfg.M, 3, 2))


def synthesis(cfg: Config) -> nn.Sequential:
    """g_s: y_hat (B, M, h, w) -> (B, 3, 16h, 16w), mirror of g_a with residual blocks first."""
    N = cfg.N
    return nn.Sequential(
        ResidualBlock(cfg.M),
        deconv(cfg.M, N), GDN(N, inverse=True),
        deconv(N, N), GDN(N, inverse=True),
        AttentionModule(N),
        deconv(N, N), GDN(N, inverse=True),
        deconv(N, 3))


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
