"""The shipped default weights: load, code the bundled sample, module-level decode, and
decode the streams checked in under tests/data."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ecf_engine
from ecf_engine import bitstream
from ecf_engine.cli import SAMPLE, main
from ecf_engine.metrics import psnr
from ecf_engine.weights import shipped_models

from conftest import git_history

DATA = Path(__file__).resolve().parent / "data"


def test_default_model_codes_the_sample(default_engine):
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    bits, stats = default_engine.encode_with_stats(rgb)
    out = ecf_engine.decode(bits)                      # finds the model by the id in the header
    assert np.array_equal(out, default_engine.decode(bits))
    assert np.array_equal(out, default_engine.reconstruct(rgb))
    # trained weights, not noise: a clearly better than trivial reconstruction at a sane rate
    assert psnr(rgb, out) > 26
    assert 0.05 < stats["bpp"] < 2.0
    # the coder spends what its integer tables promise; the real size never exceeds the
    # float model's own estimate by more than 1 % (it is below it where the model puts
    # < 2**-20 on outliers, which the tables' floors catch cheaper)
    assert abs(stats["coder_overhead_percent"]) < 1.0
    assert stats["payload_gap_percent"] < 1.0


def test_demo_command(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "bpp" in out and "PSNR" in out and "bit-exact  True" in out and "quality 4 (lambda 0.014)" in out
    assert main(["demo", "-q", "1.5"]) == 0
    assert "quality 1.5 (lambda" in capsys.readouterr().out
    assert main(["demo", "--model", "tiny", "-q", "2"]) == 1
    assert "tiny has a fixed rate" in capsys.readouterr().err


def test_thread_count_never_changes_bits_or_pixels(default_engine):
    """oneDNN kernels and float32 sigmoid / softplus tails differ between thread counts
    for the default model's shapes; the engine must not let that reach the coder."""
    import torch
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    old = torch.get_num_threads()
    try:
        results = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            bits = default_engine.encode(rgb)
            results[threads] = (bits, default_engine.decode(bits))
    finally:
        torch.set_num_threads(old)
    bits, image = results[2]
    for threads in (1, 3):
        assert results[threads][0] == bits, f"encoding on {threads} threads changed the bits"
        assert np.array_equal(results[threads][1], image), f"decoding on {threads} threads changed the image"


def _check_golden(engine, stem: str, version: int) -> None:
    """tests/data/<stem>.ecf decodes to the latents it was coded with (<stem>.y_hat.npy, int16)
    and, within float rounding of g_s, to the image the build that wrote it decoded (.decoded.png)."""
    bits = (DATA / f"{stem}.ecf").read_bytes()
    header = bitstream.read_header(bits)
    assert header.version == version and header.model_id == engine.model_id
    image, stats = engine.decode_with_stats(bits)
    want_latents = torch.from_numpy(np.load(DATA / f"{stem}.y_hat.npy").astype(np.int64))
    assert torch.equal(stats["y_hat"], want_latents)                 # the coded integers: exact anywhere
    # g_s runs in float: another CPU or BLAS may round a few pixels the other way
    stored = np.asarray(Image.open(DATA / f"{stem}.decoded.png")).astype(int)
    diff = np.abs(image.astype(int) - stored)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 0.01 * diff.size


def _retired_weights(bits: bytes, tmp_path):
    """The engine of the retired model a stream names, from the weights that the unknown-model
    error points to in the project's git history (skips without a full git checkout)."""
    import re
    import subprocess
    with pytest.raises(ecf_engine.UnknownModelError, match="no longer ships") as e:
        ecf_engine.decode(bits)
    git = git_history()
    ref = re.search(r"git show (\S+) >", str(e.value)).group(1)
    weights_file = tmp_path / "retired.safetensors"
    weights_file.write_bytes(subprocess.run(git + ["show", ref], capture_output=True, check=True).stdout)
    return ecf_engine.load(weights_file)


def test_format_5_stream_of_the_default_model_decodes_bit_exactly(default_engine):
    """tests/data/sample-crop-v5.ecf: the sample's top-left 128x96 crop, coded at quality 4.5
    with the default model by tools/golden_stream.py."""
    _check_golden(default_engine, "sample-crop-v5", version=5)
    bits = (DATA / "sample-crop-v5.ecf").read_bytes()
    assert bitstream.read_header(bits).quality == 4.5
    assert np.array_equal(ecf_engine.decode(bits), default_engine.decode(bits))   # picks the model named


def test_format_4_stream_of_a_retired_model_decodes_bit_exactly(tmp_path):
    """tests/data/sample-crop-v4.ecf: the same crop in format 4, coded with small-mse0014 (the
    default then) by the build that introduced the weights manifest; that model has left the
    package and decodes from its weights in git."""
    bits = (DATA / "sample-crop-v4.ecf").read_bytes()
    with pytest.raises(ecf_engine.UnknownModelError, match="coded with small-mse0014 .*no longer ships"):
        ecf_engine.decode(bits)
    _check_golden(_retired_weights(bits, tmp_path), "sample-crop-v4", version=4)


def test_streams_of_a_model_that_no_longer_ships_name_it(default_engine, tmp_path):
    """sample-crop-v3.ecf was coded with small-mse0014-2026-11-24, which has left the package:
    its header still reads, decoding names the model and where its weights are, and (in a
    full git checkout) the weights got that way decode the stream."""
    bits = (DATA / "sample-crop-v3.ecf").read_bytes()
    header = bitstream.read_header(bits)
    assert header.version == 3 and header.model_id.hex() == "2e2267ea91ca2da1"
    assert header.model_id not in shipped_models()
    with pytest.raises(ecf_engine.UnknownModelError, match="coded with small-mse0014-2026-11-24 .*no longer ships"):
        ecf_engine.decode(bits)
    with pytest.raises(ecf_engine.UnknownModelError, match="2e2267ea91ca2da1"):
        default_engine.decode(bits)
    old = _retired_weights(bits, tmp_path)
    assert old.model_id == header.model_id and old.decode(bits).shape == (header.height, header.width, 3)
