"""Plug ecf_engine's eContextformer entropy model into a codec of your own.

    python examples/foreign_codec.py [--steps 200] [--image path.png]

The "foreign" codec here is a plain conv autoencoder with a tiny hyperprior written in
this file; only the entropy model of y comes from ecf_engine. It trains for a few steps
on random crops of one image (a demonstration, not a usable model), then codes the image
with the 7-step schedule and checks the decoder gets the same latent back.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ecf_engine
from ecf_engine.engine import to_input
from ecf_engine.entropy import FactorizedPrior
from ecf_engine.image import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "ecf_engine" / "data" / "sample.png"


class TinyCodec(nn.Module):
    """A stand-in for your transform: y has M channels at 1/8 resolution, z at 1/32."""

    def __init__(self, M: int = 32, hyper: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 48, 5, 2, 2), nn.ReLU(), nn.Conv2d(48, 48, 5, 2, 2), nn.ReLU(),
                                     nn.Conv2d(48, M, 5, 2, 2))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(M, 48, 5, 2, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(48, 48, 5, 2, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(48, 3, 5, 2, 2, 1))
        self.hyper_encoder = nn.Sequential(nn.Conv2d(M, hyper, 3, 2, 1), nn.ReLU(), nn.Conv2d(hyper, hyper, 3, 2, 1))
        self.hyper_decoder = nn.Sequential(nn.ConvTranspose2d(hyper, 2 * M, 3, 2, 1, 1), nn.ReLU(),
                                           nn.ConvTranspose2d(2 * M, 2 * M, 3, 2, 1, 1))
        self.z_prior = FactorizedPrior(hyper)
        # the borrowed part: M channels in N_cs=4 segments, psi must have 2M channels
        cfg = ecf_engine.Config(N=hyper, M=M, N_cs=4, K=4, L=2, d_e=32, heads=2, mlp_ratio=2)
        self.entropy_model = ecf_engine.ContextEntropyModel(cfg)

    def forward(self, x):
        y = self.encoder(x)
        z = self.hyper_encoder(y)
        y_t = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        z_t = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        psi = self.hyper_decoder(z_t)
        bits = -torch.log2(self.entropy_model(y_t, psi)).sum() - torch.log2(self.z_prior.likelihood(z_t)).sum()
        return self.decoder(y_t), bits


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--image", default=str(SAMPLE))
    p.add_argument("--lmbda", type=float, default=0.014)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    pixels = load_image(args.image)[0]          # HxWx3 uint8, as the engine reads images
    H, W = pixels.shape[0] // 32 * 32, pixels.shape[1] // 32 * 32      # this toy codec needs multiples of 32
    rgb = to_input(pixels)[0, :, :H, :W]        # (3, H, W) in [0, 1], the engine's preprocessing
    codec = TinyCodec()
    opt = torch.optim.Adam(codec.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for step in range(args.steps):
        top, left = int(rng.integers(0, H - 63)), int(rng.integers(0, W - 63))
        x = rgb[None, :, top:top + 64, left:left + 64]
        x_hat, bits = codec(x)
        loss = bits / (64 * 64) + args.lmbda * 255 ** 2 * torch.mean((x_hat - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f}")

    codec.eval()
    with torch.no_grad():
        x = rgb[None]
        y = codec.encoder(x)
        psi = codec.hyper_decoder(torch.round(codec.hyper_encoder(y)))   # z would be coded with its own prior
        data, y_hat = codec.entropy_model.compress(y, psi)
        decoded = codec.entropy_model.decompress(data, psi)
        mse = torch.mean((codec.decoder(decoded).clamp(0, 1) - x) ** 2).item()
    result = {"y_bytes": len(data), "y_bpp": 8 * len(data) / (H * W), "psnr": -10 * math.log10(mse),
              "exact": bool(torch.equal(decoded, y_hat))}
    print(f"y coded in {result['y_bytes']} bytes ({result['y_bpp']:.3f} bpp), decoded latent identical: "
          f"{result['exact']}, PSNR {result['psnr']:.2f} dB")
    return result


if __name__ == "__main__":
    main()
