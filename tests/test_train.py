"""Training runs, exports weights the engine loads, and resumes from its checkpoint."""
import numpy as np
import torch
from PIL import Image

import ecf_engine
from ecf_engine.train import main as train_main

from conftest import smooth_image


def test_train_export_resume(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for i in range(21):                       # every 20th image is held out: 2 for validation
        Image.fromarray(smooth_image(80, 96, seed=i)).save(data / f"{i:02d}.png")
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--data", str(data), "--out", str(out), "--crop", "64", "--batch", "2",
            "--val-every", "2", "--device", "cpu"]
    train_main(args + ["--steps", "2"])
    assert (out / "best.safetensors").is_file()
    state = torch.load(out / "last.pt", weights_only=True)       # loads without pickle
    assert state["step"] == 2
    train_main(args + ["--steps", "4", "--resume"])
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4
    engine = ecf_engine.load(out / "best.safetensors")
    assert engine.cfg.lmbda == 0.014
    rgb = smooth_image(32, 32)
    assert np.array_equal(engine.decode(engine.encode(rgb)), engine.reconstruct(rgb))
