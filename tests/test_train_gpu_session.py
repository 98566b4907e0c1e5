"""benchmarks/gpu_session.sh: `prepare` sizes the carried data, `all --dry-run` runs every step
on the CPU with the tiny preset (the GPU variant runs the same script on a device)."""
import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import ecf_engine

from conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"


@pytest.mark.slow
def test_dry_run_does_every_step_and_writes_the_results(tmp_path):
    train, kodak = tmp_path / "train-src", tmp_path / "kodak-src"
    train.mkdir()
    kodak.mkdir()
    for i in range(24):
        Image.fromarray(smooth_image(96, 128, seed=i)).save(train / f"{i:02d}.jpg", quality=90)
    Image.fromarray(smooth_image(64, 96, seed=99)).save(kodak / "kodim01.png")
    env = {**os.environ, "ECF_GPU_DATA": str(tmp_path / "gpu-data"), "ECF_TRAIN_SRC": str(train),
           "ECF_KODAK_SRC": str(kodak), "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(SCRIPT), "prepare"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "24 training images" in r.stdout and 'carry=[".gpu-data"]' in r.stdout
    r = subprocess.run(["bash", str(SCRIPT), "all", "--dry-run"], capture_output=True, text=True, env=env, timeout=240)
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert r.returncode == 0 and summary["ok"], r.stdout[-3000:] + r.stderr[-3000:]
    assert [s["step"] for s in summary["steps"]] == ["a-tests", "b-exact", "c-kernels", "c-speed",
                                                      "c-train-throughput", "d-train"]
    assert summary["elapsed_s"] < 180
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files)
    names = {f.name for f in files}
    assert {"roundtrip.json", "kernels-cpu.json", "speed-cpu.json", "train-throughput-cpu.json",
            "train-best.safetensors", "train-last.pt"} <= names
    engine = ecf_engine.load(tmp_path / "out" / "train-best.safetensors")
    assert engine.variable_rate and engine.cfg.rates == 7


def test_a_missing_step_script_fails_loudly_by_name(tmp_path):
    """The same script from a copy of the tree without benchmarks/exact.py: step b fails with its
    name and the missing file, the rest still runs, and the exit status says so."""
    tree = tmp_path / "tree"
    (tree / "benchmarks").mkdir(parents=True)
    (tree / "benchmarks" / "gpu_session.sh").write_text(SCRIPT.read_text())
    env = {**os.environ, "ECF_GPU_DATA": str(tmp_path / "none"), "OUT": str(tmp_path / "out"),
           "ECF_GPU_SECONDS": "40"}
    r = subprocess.run(["bash", str(tree / "benchmarks" / "gpu_session.sh"), "all", "--dry-run"],
                       capture_output=True, text=True, env=env, cwd=tree, timeout=120)
    assert r.returncode == 1
    assert "step a-tests FAILED: tests/test_kernels.py is missing" in r.stderr
    assert "step b-exact FAILED: benchmarks/__main__.py is missing" in r.stderr
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert {s["step"]: s["status"] for s in summary["steps"]}["c-train-throughput"] == "failed"
