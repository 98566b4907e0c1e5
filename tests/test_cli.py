"""The `ecf` command's core paths: encode / info / decode / eval, rates, model messages.
Files, folders and pipes: test_cli_files.py; metadata: test_cli_metadata.py."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ecf_engine.cli import main

from conftest import smooth_image


def _image(path, h=40, w=72, seed=4):
    Image.fromarray(smooth_image(h, w, seed=seed)).save(path)
    return path


def test_encode_info_decode(tmp_path, capsys):
    src = _image(tmp_path / "in.png")
    assert main(["encode", str(src), "-o", str(tmp_path / "a.ecf"), "--model", "tiny"]) == 0
    assert main(["info", str(tmp_path / "a.ecf")]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{"):])
    assert (info["height"], info["width"]) == (40, 72)
    assert info["total_bytes"] == (tmp_path / "a.ecf").stat().st_size
    assert info["format_version"] == 5 and info["y_substreams"] == 1        # 64 rows: 4 latent rows, one band
    assert info["check"].startswith("ok") and len(info["model_id"]) == 16 and int(info["model_id"], 16) >= 0
    assert main(["decode", str(tmp_path / "a.ecf"), "-o", str(tmp_path / "b.png"), "--model", "tiny"]) == 0
    assert np.asarray(Image.open(tmp_path / "b.png")).shape == (40, 72, 3)


def test_errors_are_one_line_with_traceback_on_verbose(tmp_path, capsys):
    (tmp_path / "junk.ecf").write_bytes(b"junk")
    assert main(["decode", str(tmp_path / "junk.ecf")]) == 1
    err = capsys.readouterr().err
    assert "not an ECF bitstream" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["decode", str(tmp_path / "junk.ecf"), "-f", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("ecf decode: error:") and "Traceback" in err
    assert main(["encode", str(tmp_path / "missing.png"), "--model", "tiny"]) == 1
    assert capsys.readouterr().err == f"ecf encode: error: {tmp_path / 'missing.png'}: no such file or folder\n"


def test_info_on_damaged_streams(tmp_path, capsys):
    _image(tmp_path / "in.png")
    assert main(["encode", str(tmp_path / "in.png"), "--model", "tiny"]) == 0
    bits = (tmp_path / "in.ecf").read_bytes()
    flipped = bytearray(bits)
    flipped[len(bits) // 2] ^= 0x10
    cases = {"truncated.ecf": (bits[:-7], "truncated ECF bitstream"),
             "flipped.ecf": (bytes(flipped), "CRC-32 mismatch"),
             "trailing.ecf": (bits + b"\0", "trailing data"),
             "header.ecf": (bits[:12], "truncated ECF bitstream")}
    capsys.readouterr()
    for name, (data, what) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["info", str(tmp_path / name)]) == 1, name
        captured = capsys.readouterr()
        assert what in captured.err and captured.err.count("\n") == 1, name
        if name != "header.ecf":                    # the header is readable: shown, marked damaged
            assert json.loads(captured.out)["check"].startswith("damaged: ")


def test_eval_writes_json(tmp_path, capsys):
    for i in range(2):
        _image(tmp_path / f"{i}.png", 64, 80, seed=i)
    out = tmp_path / "r.json"
    assert main(["eval", str(tmp_path), "--model", "tiny", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 2 and result["mean"]["all_bit_exact"] and result["skipped"] == []
    sizes = [r["bytes"] for r in result["per_image"]]
    assert result["mean"]["bpp"] == np.mean([8 * b / (64 * 80) for b in sizes])
    assert main(["eval", str(tmp_path), "--model", "tiny", "--json", str(out)]) == 1     # exists, no -f
    assert "exists" in capsys.readouterr().err


def test_eval_skips_unreadable_files_like_encode(tmp_path, capsys):
    for i in range(2):
        _image(tmp_path / f"{i}.png", 64, 80, seed=i)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["eval", str(tmp_path), "--model", "tiny", "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    eval_warning = next(line for line in err.splitlines() if "warning" in line)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["images"] == 2 and [s["image"] for s in result["skipped"]] == [str(tmp_path / "broken.png")]
    assert main(["encode", str(tmp_path), "-o", str(tmp_path / "out"), "--model", "tiny"]) == 1
    encode_warning = next(line for line in capsys.readouterr().err.splitlines() if "warning" in line)
    assert eval_warning.replace("ecf eval:", "") == encode_warning.replace("ecf encode:", "")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.ecf", "1.ecf"]


def test_quality_sets_the_default_models_rate_and_rdo(tmp_path):
    from ecf_engine import load, read_header
    names = [_image(tmp_path / f"{i}.png", 64, 96, seed=i) for i in range(2)]
    assert main(["encode", *map(str, names), "-q", "1.5", "--rdo", "2"]) == 0
    engine = load("default")
    for name in names:
        header = read_header(name.with_suffix(".ecf").read_bytes())
        assert (header.model_id, header.quality) == (engine.model_id, 1.5)
        assert engine.decode(name.with_suffix(".ecf").read_bytes()).shape == (64, 96, 3)


@pytest.mark.parametrize("argv, message", [
    (["-q", "0.5"], "0.5 is outside [1, 7]"), (["-q", "9"], "9 is outside [1, 7]"), (["-q", "nan"], "not a finite number"),
    (["-q", "high"], "not a number"), (["--lmbda", "0"], "outside"), (["--lmbda", "-1"], "outside"),
    (["--bpp", "inf"], "not a finite number"), (["--psnr", "30", "--bpp", "1"], "not allowed with"),
    (["--model", "tiny", "--bpp", "0.5"], "variable-rate"), (["--model", "tiny", "-q", "2"], "variable-rate"),
    (["--model", "tiny-vr", "-q", "7.5"], "outside [1, 7]"),
    (["--model", "tiny-vr", "--lmbda", "0.5"], "lambda must be in"),
    (["--threads", "0"], "below 1"), (["--max-pixels", "x"], "not a whole number"),
])
def test_rate_and_option_errors_write_nothing(tmp_path, capsys, argv, message):
    src = _image(tmp_path / "in.png")
    code = main(["encode", str(src), *argv])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and err.count("\n") == 1
    assert not (tmp_path / "in.ecf").exists()


def test_variable_rate_model_takes_the_rate_options(tmp_path, capsys):
    from ecf_engine import read_header
    src = _image(tmp_path / "in.png", 64, 96)
    assert main(["encode", str(src), "--model", "tiny-vr", "-q", "2.5", "-o", str(tmp_path / "q.ecf")]) == 0
    assert read_header((tmp_path / "q.ecf").read_bytes()).quality == 2.5
    assert main(["encode", str(src), "--model", "tiny-vr", "--lmbda", "0.014", "-o", str(tmp_path / "l.ecf")]) == 0
    assert abs(read_header((tmp_path / "l.ecf").read_bytes()).quality - 4.0) < 1e-3
    assert main(["decode", str(tmp_path / "q.ecf"), "--model", "tiny-vr"]) == 0


def test_model_messages_speak_cli(tmp_path, capsys):
    src = _image(tmp_path / "in.png")
    assert main(["encode", str(src), "--model", "nosuchmodel"]) == 1
    err = capsys.readouterr().err
    from ecf_engine.weights import MODELS
    listed = err.split("shipped models: ")[1].split(" (")[0].split(", ")
    assert set(listed) <= {"default"} | {m.name for m in MODELS.values() if m.status == "shipped"}
    assert main(["encode", str(src), "--model", "tiny"]) == 0
    assert main(["decode", str(tmp_path / "in.ecf")]) == 1              # a model that is not shipped
    err = capsys.readouterr().err
    assert "--model" in err and "ecf_engine" not in err and "load(" not in err
    assert main(["decode", str(tmp_path / "in.ecf"), "--model", "default"]) == 1      # the wrong model
    err = capsys.readouterr().err
    assert "--model" in err and "ecf_engine" not in err


def test_max_pixels_refuses_before_coding(tmp_path, capsys):
    src = _image(tmp_path / "in.png", 64, 96)
    assert main(["encode", str(src), "--model", "tiny", "--max-pixels", "1000"]) == 1
    assert "--max-pixels" in capsys.readouterr().err and not (tmp_path / "in.ecf").exists()
    assert main(["encode", str(src), "--model", "tiny"]) == 0
    assert main(["decode", str(tmp_path / "in.ecf"), "--model", "tiny", "--max-pixels", "1000"]) == 1
    assert "limit" in capsys.readouterr().err and not (tmp_path / "in.decoded.png").exists()


def test_version_starts_without_torch():
    import ecf_engine
    out = subprocess.run([sys.executable, "-m", "ecf_engine.cli", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == f"ecf {ecf_engine.__version__}"
    probe = ("import sys, ecf_engine, ecf_engine.cli as cli; cli.build_parser(); from PIL import Image; "
             "print('torch' in sys.modules, 'ECF' in Image.OPEN)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "True"]


def test_info_counts_the_y_substreams(tmp_path, capsys):
    src = _image(tmp_path / "tall.png", 300, 40, seed=5)
    assert main(["encode", str(src), "-o", str(tmp_path / "t.ecf"), "--model", "tiny"]) == 0
    assert main(["info", str(tmp_path / "t.ecf")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["y_substreams"] == 2            # 320 rows: 20 latent rows
