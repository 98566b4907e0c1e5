"""The shipped default weights: load, code the bundled sample, module-level decode."""
import numpy as np
from PIL import Image

import ecf_engine
from ecf_engine.cli import SAMPLE, main
from ecf_engine.metrics import psnr


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
    assert "bpp" in out and "PSNR" in out and "bit-exact  True" in out


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
