"""Shared fixtures: tiny seeded models, offline, fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ecf_engine
from ecf_engine.engine import Engine
from ecf_engine.weights import load_weights

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def tiny_model(seed: int = 0, gain: float = 40.0):
    """The tiny preset with seeded random weights, its latents scaled up so that coding
    sees many distinct symbols (random init gives |y| < 0.5, i.e. all zeros)."""
    model, mid = load_weights("tiny", seed=seed)
    with torch.no_grad():
        model.g_a[-1].weight.mul_(gain)
        model.h_a[-1].weight.mul_(gain / 4)
    return model, mid


@pytest.fixture(scope="package")
def tiny_engine() -> Engine:
    model, mid = tiny_model()
    return Engine(model, mid, name="tiny-test")


@pytest.fixture(scope="package")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic natural-ish test image: smooth gradients plus texture."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([np.sin(xx / 17 + c) * np.cos(yy / 23 - c) for c in range(3)], -1)
    img = 128 + 80 * base + r.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="package")
def default_engine() -> Engine:
    return ecf_engine.load("default")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds on a 2-core CPU; "
                                       "deselect with -m 'not slow' (CI runs everything)")


def pytest_report_header(config):
    import importlib.util
    if importlib.util.find_spec("triton") is None:
        return "triton not installed: the kernel tests skip (pip install -e '.[gpu]' runs them)"
