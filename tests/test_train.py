"""Training runs, exports weights the engine loads, and resumes from its checkpoint."""

import numpy as np
import pytest
import torch
from PIL import Image

import ecf_engine
from ecf_engine.train import read_checkpoint, run as train_main

from conftest import smooth_image


def test_train_export_resume(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for i in range(21):                       # every 20th image is held out: 2 for validation
        Image.fromarray(smooth_image(80, 96, seed=i)).save(data / f"{i:02d}.png")
    out = tmp_path / "run"
    common = ["--preset", "tiny", "--data", str(data), "--crop", "64", "--batch", "2", "--val-every", "2",
              "--device", "cpu"]
    args = common + ["--out", str(out)]
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

    # a new run continuing from the old one keeps its Adam moments (their step counts go on)
    more = tmp_path / "more"
    train_main(common + ["--out", str(more), "--continue-from", str(out / "last.pt"), "--steps", "2",
                         "--warmup", "0", "--lr", "1e-5"])
    state = read_checkpoint(more / "last.pt")
    assert state["step"] == 2
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {6.0}
    with pytest.raises(ValueError, match="exclude"):
        train_main(args + ["--init", "tiny", "--continue-from", str(out / "last.pt")])


def test_mixed_quantization_feeds_rounded_latents_with_straight_through_gradient():
    torch.manual_seed(0)
    model = ecf_engine.load("tiny").model.train()
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(1)
    mixed = model(x, ste=True)
    # g_s sees round(y): the same picture as the rounded (validation) pass ...
    assert torch.equal(mixed["x_hat"], model(x, noise=False)["x_hat"])
    # ... while the rates are still taken at noisy latents (the same noise draw as noise-only)
    torch.manual_seed(1)
    noisy = model(x)
    assert torch.equal(mixed["likelihoods"]["z"], noisy["likelihoods"]["z"])
    assert not torch.equal(mixed["likelihoods"]["y"], noisy["likelihoods"]["y"])   # context from round(y)
    assert not torch.equal(mixed["x_hat"], noisy["x_hat"])
    # the distortion's gradient reaches g_a through the rounding
    torch.mean((mixed["x_hat"] - x) ** 2).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.g_a.parameters())


def test_lambda_far_outside_the_papers_range_is_refused(tmp_path):
    args = ["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "--device", "cpu"]
    with pytest.raises(ValueError, match="missing or extra zero"):
        train_main(args + ["--lmbda", "0.0014"])        # a typo for 0.014
    for allowed in (["--lmbda", "0.014"], ["--lmbda", "0.0014", "--any-lmbda"]):
        with pytest.raises(FileNotFoundError):          # past the check, on to the (missing) data
            train_main(args + allowed)


def test_balance_weighs_each_crops_loss_by_sqrt_of_lambda_ratio():
    from ecf_engine.model import rate_distortion_loss
    from ecf_engine.train import balance_weights
    lmbda = torch.tensor([0.0035, 0.014, 0.056])
    w = balance_weights(lmbda)
    assert torch.allclose(w, torch.tensor([2.0, 1.0, 0.5]))
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    out = {"x_hat": x + 0.05 * torch.randn_like(x), "likelihoods": {"y": torch.rand(3, 4, 2, 2) * 0.9 + 0.05}}
    plain, weighted = rate_distortion_loss(out, x, lmbda), rate_distortion_loss(out, x, lmbda, w)
    per_image = torch.stack([rate_distortion_loss({"x_hat": out["x_hat"][i:i + 1],
                                                   "likelihoods": {"y": out["likelihoods"]["y"][i:i + 1]}},
                                                  x[i:i + 1], lmbda[i])["loss"] for i in range(3)])
    assert torch.allclose(plain["loss"], per_image.mean())
    assert torch.allclose(weighted["loss"], (w * per_image).mean())
    assert weighted["bpp"] == plain["bpp"] and weighted["mse"] == plain["mse"]


def test_balanced_variable_rate_run_records_it_and_fixed_rate_refuses_it(data, tmp_path):
    common = ["--data", str(data), "--crop", "64", "--batch", "2", "--val-every", "2", "--device", "cpu",
              "--steps", "2"]
    v = train_main(common + ["--preset", "tiny-vr", "--balance", "--out", str(tmp_path / "vr")])
    # validation weighs the qualities' losses as training does
    from ecf_engine.train import balance_weights
    from ecf_engine.config import QUALITY_LAMBDAS
    w = [float(balance_weights(QUALITY_LAMBDAS[int(q) - 1])) for q in v["qualities"]]
    assert v["loss"] == pytest.approx(np.mean([wq * r["loss"] for wq, r in zip(w, v["qualities"].values())]))
    from safetensors import safe_open
    with safe_open(str(tmp_path / "vr" / "best.safetensors"), "pt") as f:
        meta = f.metadata()
    assert '"balance": true' in meta["card"]
    with pytest.raises(ValueError, match="trained with --balance; resume it the same way"):
        train_main(common + ["--preset", "tiny-vr", "--steps", "4", "--resume", "--out", str(tmp_path / "vr")])
    with pytest.raises(ValueError, match="--balance weighs the rates of a variable-rate model"):
        train_main(common + ["--preset", "tiny", "--balance", "--out", str(tmp_path / "fixed")])
    assert not (tmp_path / "fixed").exists()
