"""Data-parallel training: two gloo ranks under torchrun, on the tiny presets."""
import os
import subprocess
import sys

import pytest
from PIL import Image

from ecf_engine.train import read_checkpoint

from conftest import smooth_image


def torchrun(ranks: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
           "-m", "ecf_engine.train", "--device", "cpu", "--crop", "64", "--lr", "1e-3", "--warmup", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "tiny-vr"])
def test_two_gloo_ranks_train_identical_weights_and_resume(data, tmp_path, preset):
    out = tmp_path / "run"
    common = ["--preset", preset, "--data", str(data), "--batch", "4", "--val-every", "2", "--out", str(out)]
    r = torchrun(2, *common, "--steps", "4", "--stop-after", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    # at each checkpoint the ranks compare a hash of their weights (all_gather); a difference is an error
    assert "step 2: val loss" in r.stdout and "weights identical on 2 ranks" in r.stdout, r.stdout
    assert read_checkpoint(out / "last.pt")["step"] == 2
    r = torchrun(2, *common, "--steps", "4", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at step 2" in r.stdout and "step 4: val loss" in r.stdout
    assert "weights identical on 2 ranks" in r.stdout.split("step 4: val loss")[1]
    state = read_checkpoint(out / "last.pt")
    assert state["step"] == 4 and state["world"] == 2 and state["batch"] == 4
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {4.0}
    assert (out / "best.safetensors").is_file()


@pytest.mark.slow
def test_more_ranks_than_training_images_is_an_error_on_every_rank(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for i in range(3):                        # one held out, two to train on
        Image.fromarray(smooth_image(80, 96, seed=i)).save(data / f"{i}.png")
    r = torchrun(3, "--preset", "tiny", "--data", str(data), "--batch", "3", "--out", str(tmp_path / "run"))
    assert r.returncode != 0
    assert r.stderr.count("error: 3 ranks but only 2 training images") == 3, r.stderr[-3000:]
    assert "Traceback (most recent call last):\n  File \"" not in r.stderr.split("error: 3 ranks")[0]
    assert not (tmp_path / "run").exists()
