"""Training state: compact checkpoints, the old full format, resuming on the same schedule,
time budgets, the bf16 fallback."""
import math
import time

import torch

from ecf_engine import train as tr
from ecf_engine.config import Config
from ecf_engine.model import ECFModel, rate_distortion_loss


def common(data, out, *more):
    return ["--preset", "tiny", "--data", str(data), "--crop", "64", "--batch", "2", "--device", "cpu",
            "--warmup", "2", "--lr", "1e-3", "--out", str(out), *more]


def weights(path):
    state = tr.read_checkpoint(path)
    return torch.cat([v.flatten() for v in state["model"].values()])


def test_blockwise_quantizers_meet_their_error_bounds():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(1000, generator=g) * torch.logspace(-6, 0, 1000)       # values of very different size
    q = tr.dequantize_int8(tr.quantize_int8(m))
    blocks = tr._blocks(m).abs().amax(1).repeat_interleave(tr.BLOCK)[:m.numel()]
    assert ((q - m).abs() <= blocks / 254 + 1e-12).all()
    s = torch.rand(1000, generator=g) * torch.logspace(-8, -2, 1000)
    s[::7] = 0                                                             # exact zeros stay zero
    d = tr.dequantize_log_uint8(tr.quantize_log_uint8(s))
    assert torch.equal(d == 0, s == 0)
    for i in range(0, s.numel(), tr.BLOCK):          # per block: half a step of its log range
        b, db = s[i:i + tr.BLOCK], d[i:i + tr.BLOCK]
        nz = b > 0
        span = math.log(b[nz].max() / b[nz].min())
        assert ((db[nz] / b[nz]).log().abs() <= span / 508 + 1e-5).all()


def test_compact_checkpoint_resumes_nearly_as_the_full_one(data, tmp_path):
    # the same 6-step schedule, interrupted after 3 steps with a full and a compact checkpoint
    straight, full, compact = tmp_path / "straight", tmp_path / "full", tmp_path / "compact"
    tr.run(common(data, straight, "--steps", "6", "--val-every", "3", "--full-checkpoint"))
    tr.run(common(data, full, "--steps", "6", "--val-every", "100", "--stop-after", "3", "--full-checkpoint"))
    tr.run(common(data, compact, "--steps", "6", "--val-every", "100", "--stop-after", "3"))
    assert compact.joinpath("last.pt").stat().st_size < 0.5 * full.joinpath("last.pt").stat().st_size
    at3 = weights(full / "last.pt")
    assert (weights(compact / "last.pt") - at3).abs().max() < 2e-3 * at3.abs().max()   # fp16 rounding
    for out in (full, compact):
        tr.run(common(data, out, "--steps", "6", "--val-every", "100", "--resume", "--full-checkpoint"))
    end, end_full, end_compact = (weights(p / "last.pt") for p in (straight, full, compact))
    # from the full state the resumed run takes exactly the uninterrupted run's steps ...
    assert torch.equal(end_full, end)
    # ... and from the compact state nearly: much closer to it than the 3 steps moved the weights
    moved = (end - at3).norm()
    assert moved > 0
    assert (end_compact - end).norm() < 0.2 * moved
    state = tr.read_checkpoint(full / "last.pt")
    assert state["step"] == 6 and state["schedule"] == {"steps": 6, "lr": 1e-3, "warmup": 2}
    assert state["lr"] == tr.learning_rate(5, 6, 1e-3, warmup=2)


def test_old_full_checkpoints_resume_and_convert(data, tmp_path):
    """last.pt as written before checkpoint formats were numbered (no "format", "schedule")."""
    out = tmp_path / "old"
    out.mkdir()
    torch.manual_seed(0)
    model = ECFModel(Config.from_name("tiny").replace(lmbda=0.014))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(1, 3, 64, 64)
    rate_distortion_loss(model(x), x, 0.014)["loss"].backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 1, "best": 5.0,
                "config": model.cfg.to_json()}, out / "last.pt")
    tr.run(["--convert", str(out / "last.pt"), str(tmp_path / "compact.pt")])
    c = tr.read_checkpoint(tmp_path / "compact.pt")
    assert c["format"] == tr.COMPACT and c["step"] == 1 and c["config"] == model.cfg
    ref = opt.state_dict()["state"]
    for i, s in c["optimizer"]["state"].items():
        assert float(s["step"]) == 1.0
        assert torch.allclose(s["exp_avg"], ref[i]["exp_avg"], rtol=0, atol=ref[i]["exp_avg"].abs().max() / 200 + 1e-12)
    tr.run(common(data, out, "--steps", "3", "--val-every", "100", "--resume"))
    state = tr.read_checkpoint(out / "last.pt")
    assert state["step"] == 3 and state["format"] == tr.COMPACT
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {3.0}


def test_time_budget_stops_cleanly_with_checkpoint_and_export(data, tmp_path):
    out = tmp_path / "budget"
    t = time.monotonic()
    tr.run(common(data, out, "--steps", "100000", "--val-every", "100000", "--time-budget", "12"))
    assert time.monotonic() - t < 12
    state = tr.read_checkpoint(out / "last.pt")
    assert 0 < state["step"] < 100000
    assert (out / "best.safetensors").is_file()
    tr.run(common(data, out, "--steps", "100000", "--val-every", "100000", "--time-budget", "8", "--resume"))
    assert tr.read_checkpoint(out / "last.pt")["step"] > state["step"]


def test_cpus_without_bf16_fall_back_to_fp32_with_a_message(monkeypatch, capsys):
    monkeypatch.setattr(tr, "bf16_supported", lambda: False)
    assert tr.pick_precision("auto", torch.device("cpu")) == "fp32"
    assert "no native bf16" in capsys.readouterr().out
    assert tr.pick_precision("bf16", torch.device("cpu")) == "bf16"            # asked for: as asked
    monkeypatch.setattr(tr, "bf16_supported", lambda: True)
    assert tr.pick_precision("auto", torch.device("cpu")) == "bf16"


def test_weight_fingerprints_see_a_one_ulp_change():
    model = ECFModel(Config.from_name("tiny")).to(memory_format=torch.channels_last)
    before = tr.fingerprint(model)
    plain = ECFModel(Config.from_name("tiny"))
    plain.load_state_dict(model.state_dict())
    assert torch.equal(before, tr.fingerprint(plain))                     # layout does not matter
    with torch.no_grad():
        w = model.g_s[-1].weight
        w[1, 2, 0, 1] = torch.nextafter(w[1, 2, 0, 1], torch.tensor(1.0))
    assert not torch.equal(before, tr.fingerprint(model))
