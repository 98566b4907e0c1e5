"""Shared fixtures: tiny seeded models, offline, fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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


def git_history() -> list[str]:
    """`git -C <repository>`, for tests that read the project's history; skips the test
    where there is none to read (no git, an installed package, a shallow clone)."""
    import shutil
    import subprocess
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    if shutil.which("git") is None or subprocess.run(git + ["rev-parse", "--is-shallow-repository"],
                                                     capture_output=True, text=True).stdout.strip() != "false":
        pytest.skip("not a full git checkout: the project's history is not at hand")
    return git


@pytest.fixture(scope="package")
def data(tmp_path_factory):
    """A training folder: 21 smooth 96x80 PNGs (every 20th file is held out: 2 for validation)."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(21):
        Image.fromarray(smooth_image(80, 96, seed=i)).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="package")
def default_engine() -> Engine:
    return ecf_engine.load("default")


# Measured over 3 s each (`pytest --durations`, 2-core CPU with one core busy): marked slow
# here, so that `-m "not slow"` is the quick subset without editing the modules.
SLOW = (
    "test_kernels_e2e.py::test_streams_do_not_depend_on_the_attention_backend",
    "test_batch_stream_rdo.py::test_rdo_lowers_the_loss_and_streams_stay_compatible",
    "test_batch_stream_rdo.py::test_measured_rdo_schedules_beat_the_papers",
    "test_fuzz.py::test_mutated_streams_end_in_ecf_errors_or_valid_images",
    "test_kernels.py::test_kernels_compile_for_a_gpu_target",
    "test_bench_ops.py::test_exact_command_through_the_cli",
    "test_kernels_e2e.py::test_float_parameters_differ_between_kernel_and_reference",
    "test_train_paths.py::test_compiled_training_step_matches_eager",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds on a 2-core CPU; "
                                       "deselect with -m 'not slow' (CI runs everything)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("/")[-1].split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)


def pytest_report_header(config):
    import importlib.util
    if importlib.util.find_spec("triton") is None:
        return "triton not installed: the kernel tests skip (pip install -e '.[gpu]' runs them)"
