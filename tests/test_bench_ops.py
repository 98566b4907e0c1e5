"""The benchmark suite (`python -m benchmarks ...`): every command's --help, one tiny run of
each on a small image with the tiny preset, and pytest-benchmark timings of the hot ops,
Kodak-sized (768x512 -> latent 48x32) with the `small` preset. The timings are quick here
(few rounds, not asserted); for full statistics run

    python -m pytest tests/test_bench_ops.py -k "not command" --benchmark-enable --benchmark-only --benchmark-min-rounds=20
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ecf_engine import Config, ContextEntropyModel, rans, schedule
from ecf_engine.egr import egr, egr_inverse
from ecf_engine.entropy import quantize_fixed

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:             # the suite is a folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as suite  # noqa: E402

H, W = 32, 48


# --- the entry point ----------------------------------------------------------------------

def test_module_entry_point_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for command in [*suite.COMMANDS, *suite.EXTERNAL, "all"]:
        assert f"\n    {command} " in done.stdout or f"    {command}\n" in done.stdout, command


@pytest.mark.parametrize("command", list(suite.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        suite.main([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m benchmarks {command}")
    assert "--out" in out


def test_unknown_command_and_bad_options_are_clear_errors(capsys):
    with pytest.raises(SystemExit) as stop:
        suite.main(["nonsense"])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--qualities: every quality must lie in"):
        suite.main(["rd", "--qualities", "0,9", "--codecs", "none"])
    with pytest.raises(SystemExit, match="is not WIDTHxHEIGHT"):
        suite.main(["speed", "--models", "tiny", "--sizes", "big"])
    assert suite.main(["all", "--repeat", "3"]) == 2


def test_script_commands_pass_their_arguments_through(tmp_path, monkeypatch, capsys):
    script = tmp_path / "script.py"
    script.write_text("import sys; print(sys.argv[1:]); sys.exit(3)")
    monkeypatch.setitem(suite.EXTERNAL, "train", ([sys.executable, str(script)], "a script"))
    assert suite.main(["train", "--steps", "2"]) == 3
    monkeypatch.setitem(suite.EXTERNAL, "train", ([sys.executable, str(tmp_path / "missing.py")], "a script"))
    assert suite.main(["train", "--help"]) == 2
    assert "missing.py is not there" in capsys.readouterr().err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One small image (a crop of the package's sample), so every run codes something real."""
    path = tmp_path_factory.mktemp("images")
    with Image.open(ROOT / "ecf_engine" / "data" / "sample.png") as im:
        im.convert("RGB").crop((0, 0, 128, 64)).save(path / "crop.png")
    return path


def _json(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert data["command"].startswith("python -m benchmarks ")
    assert data["machine_info"]["cpu"]["model"] and data["machine_info"]["torch_threads"] >= 1
    return data


def test_rd_command_on_a_fixed_rate_model(folder, tmp_path):
    out = tmp_path / "rd"
    assert suite.main(["rd", "--folder", str(folder), "--models", "tiny", "--codecs", "jpeg420",
                       "--no-ms-ssim", "--out", str(out)]) == 0
    data = _json(tmp_path / "rd.json")
    ours = data["codecs"]["ours"]
    assert not ours["variable_rate"] and [p["setting"] for p in ours["points"]] == ["tiny"]
    point = ours["points"][0]
    assert point["quality"] is None and point["all_bit_exact"] and point["bpp"] > 0
    assert point["per_image"][0]["image"] == "crop.png" and point["warmup_ms"] > 0
    assert len(data["codecs"]["jpeg420"]["points"]) == 9
    assert "| **ours (eContextformer)** | 1 |" in (tmp_path / "rd.md").read_text()
    # a new model replaces it: the old entry stays, as retired models to compare with
    with pytest.raises(SystemExit, match="keep-ours-as"):
        suite.main(["rd", "--folder", str(folder), "--codecs", "none", "--keep-ours-as", "jpeg420", "--out", str(out)])
    assert suite.main(["rd", "--folder", str(folder), "--models", "tiny-vr", "--qualities", "1,3,5,7",
                       "--curve-step", "0", "--codecs", "none", "--keep-ours-as", "fixed", "--out", str(out)]) == 0
    codecs = _json(tmp_path / "rd.json")["codecs"]
    assert codecs["fixed"]["points"] == ours["points"] and codecs["fixed"]["kind"] == "retired"
    assert codecs["ours"]["variable_rate"] and "jpeg420" in codecs
    assert "| BD-rate ≤ 0 vs the retired fixed-rate models of ours | BD-rate no overlap | no |" in \
        (tmp_path / "rd.md").read_text()


def test_rd_command_on_a_variable_rate_model(folder, tmp_path):
    """The preset's random weights: the structure of the run, not its numbers."""
    out = tmp_path / "vr"
    assert suite.main(["rd", "--folder", str(folder), "--models", "small-vr", "--qualities", "1,7",
                       "--curve-step", "3", "--codecs", "none", "--out", str(out)]) == 0
    ours = _json(tmp_path / "vr.json")["codecs"]["ours"]
    assert ours["variable_rate"] and ours["models"] == ["small-vr"]
    assert sorted(p["quality"] for p in ours["points"]) == [1.0, 7.0]
    assert [p["quality"] for p in ours["curve"]] == [1.0, 4.0, 7.0]
    assert all(p["all_bit_exact"] for p in ours["points"])
    assert isinstance(ours["rate_monotonic_in_quality"], bool)
    assert "small-vr Q=7" in (tmp_path / "vr.md").read_text()


def test_rate_command_meets_a_reachable_target_and_records_an_unreachable_one(folder, tmp_path):
    out = tmp_path / "rate.json"
    # 0.01 bpp is far below what any image reaches at quality 1
    assert suite.main(["rate", "--folder", str(folder), "--bpp", "0.2", "0.01", "--psnr", "31",
                       "--out", str(out)]) == 0
    targets = _json(out)["targets"]
    reachable, unreachable, by_psnr = targets
    row = reachable["rows"][0]
    assert reachable["reachable"] == 1 and row["within_promise"] and abs(row["error"]) <= 0.02
    assert 1 <= row["quality"] <= 7
    assert unreachable["reachable"] == 0 and "below the lowest" in unreachable["rows"][0]["message"]
    assert by_psnr["kind"] == "psnr" and by_psnr["images"] == 1


def test_ceiling_command(folder, tmp_path):
    out = tmp_path / "ceiling.json"
    assert suite.main(["ceiling", "--folder", str(folder), "--qualities", "1,4", "--out", str(out)]) == 0
    rows = _json(out)["rows"]
    assert [(r["model"], r["quality"]) for r in rows] == [("small-vr", 1.0), ("small-vr", 4.0)]
    for r in rows:                # finer latents reconstruct at least about as well as the coded ones
        assert r["unquantized"]["psnr"] > r["rounded"]["psnr"] - 0.5 and r["rounded"]["psnr"] > 20
    assert rows[1]["rounded"]["psnr"] > rows[0]["rounded"]["psnr"]      # a higher quality, a better image


def test_speed_command(tmp_path):
    out = tmp_path / "speed"
    assert suite.main(["speed", "--models", "tiny", "--sizes", "128x64", "--repeat", "1", "--out", str(out)]) == 0
    row = _json(tmp_path / "speed.json")["rows"][0]
    assert row["size"] == "128x64" and row["warmup_decode_ms"] > 0
    assert row["decode_ms"]["n"] == 1 and row["decode_ms"]["median"] >= row["decode_coding_ms"]["median"]


def test_complexity_command(tmp_path):
    out = tmp_path / "complexity.json"
    assert suite.main(["complexity", "--models", "tiny", "--size", "128x64", "--out", str(out)]) == 0
    data = _json(out)
    assert data["attention_check_matches"]
    k = data["rows"][0]["kmac_per_px"]
    assert k["decoder_total"] > k["g_s"] > 0


def test_complexity_ladder_command(tmp_path):
    out = tmp_path / "ladder.json"
    assert suite.main(["complexity", "--ladder", "--models", "tiny", "--repeat", "1", "--out", str(out)]) == 0
    rows = _json(out)["models"][0]["rows"]
    assert rows["(d) + KV cache"]["kmac_per_px"] < rows["(a) 2*N_cs steps, full recomputation, no EGR"]["kmac_per_px"]


def test_formats_command(folder, tmp_path):
    out = tmp_path / "formats.json"
    assert suite.main(["formats", "--models", "tiny", "--folder", str(folder), "--images", "1", "--out", str(out)]) == 0
    data = _json(out)
    row = data["rows"][0]
    for v in data["versions"]:
        assert row[f"y_bytes_v{v}"] > 0 and row[f"coder_cost_percent_v{v}"] > -1
    assert 0 <= row["params_differing"] < 0.1


def test_kernels_rans_command(tmp_path):
    out = tmp_path / "rans.json"
    assert suite.main(["kernels", "rans", "--symbols", "20000", "--repeat", "1", "--thread-counts", "1",
                       "--out", str(out)]) == 0
    row = _json(out)["rows"][0]
    assert row["decode_msym_per_s"] > 0 and 0 < row["bits_per_symbol"] < 16


def test_exact_command_through_the_cli(folder, tmp_path):
    out = tmp_path / "roundtrip.json"
    assert suite.main(["exact", "--model", "tiny", "--folder", str(folder), "--out", str(out)]) == 0
    data = _json(out)
    assert data["all_bit_exact"] and data["threads"] == {"encode": 2, "decode": 1}


# --- hot-op timings -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = Config.from_name("small")
    cem = ContextEntropyModel(cfg).eval()
    y = torch.round(torch.randn(1, cfg.M, H, W) * 2)
    psi = torch.randn(1, 2 * cfg.M, H, W)
    return cfg, cem, y, psi


def test_egr_roundtrip(benchmark, setup):
    cfg, _, y, _ = setup
    out = benchmark(lambda: egr_inverse(egr(y, cfg.N_cs), cfg.N_cs))
    assert torch.equal(out, y)


def test_context_model_seven_steps_cached(benchmark, setup):
    cfg, cem, y, psi = setup
    slabs = egr(y, cfg.N_cs)
    out = benchmark.pedantic(schedule.run, args=(cem, psi, lambda g, raw: slabs[:, g]), rounds=3, iterations=1)
    assert torch.equal(out, y)


def test_rans_group_coding(benchmark, setup):
    """One group of a Kodak latent through the y coder (tables + rANS, 8 substreams)."""
    cfg = setup[0]
    g = torch.Generator().manual_seed(0)
    n = H * W // 2 * cfg.p_cs
    q = quantize_fixed(torch.round(torch.randn(n, 3, cfg.k_m, generator=g, dtype=torch.float64) * 4096).long(), 12)
    values = torch.round(q[1].double().mean(-1) / 32).long()
    bands = 8
    offsets = rans.band_offsets(n, 1, bands)

    def roundtrip():
        enc = rans.SubstreamEncoder(bands)
        for s in range(bands):
            enc.add(s, tuple(t[offsets[s]:offsets[s + 1]] for t in q), values[offsets[s]:offsets[s + 1]])
        dec = rans.SubstreamDecoder(enc.finish(), bands)
        return dec.decode_group(q, offsets)
    out = benchmark.pedantic(roundtrip, rounds=3, iterations=1)
    assert torch.equal(out, values)


def test_rd_jobs_measure_the_same_points_side_by_side(folder, tmp_path):
    """--jobs 2 codes each quality in a worker process of one thread: the same streams."""
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}"
        assert suite.main(["rd", "--folder", str(folder), "--models", "tiny-vr", "--qualities", "1,4,7",
                           "--curve-step", "0", "--codecs", "none", "--jobs", str(jobs), "--out", str(out)]) == 0
        ours = _json(tmp_path / f"j{jobs}.json")["codecs"]["ours"]
        assert ours["jobs"] == jobs
        runs[jobs] = [(p["quality"], p["bpp"], p["psnr"], p["all_bit_exact"]) for p in ours["points"]]
    assert runs[1] == runs[2] and len(runs[1]) == 3
