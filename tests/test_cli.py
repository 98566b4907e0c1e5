import json

import numpy as np
from PIL import Image

from ecf_engine.cli import main

from conftest import smooth_image


def test_encode_info_decode(tmp_path, capsys):
    rgb = smooth_image(40, 72, seed=4)
    src = tmp_path / "in.png"
    Image.fromarray(rgb).save(src)
    assert main(["encode", str(src), "-o", str(tmp_path / "a.ecf"), "--model", "tiny"]) == 0
    assert main(["info", str(tmp_path / "a.ecf")]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{"):])
    assert (info["height"], info["width"]) == (40, 72)
    assert info["total_bytes"] == (tmp_path / "a.ecf").stat().st_size
    assert info["format_version"] == 4 and info["y_substreams"] == 1        # 64 rows: 4 latent rows, one band
    assert main(["decode", str(tmp_path / "a.ecf"), "-o", str(tmp_path / "b.png"), "--model", "tiny"]) == 0
    assert np.asarray(Image.open(tmp_path / "b.png")).shape == (40, 72, 3)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    (tmp_path / "junk.ecf").write_bytes(b"junk")
    assert main(["decode", str(tmp_path / "junk.ecf")]) == 1
    assert "not an ECF bitstream" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "missing.png"), "--model", "tiny"]) == 1


def test_eval_writes_json(tmp_path, capsys):
    for i in range(2):
        Image.fromarray(smooth_image(64, 80, seed=i)).save(tmp_path / f"{i}.png")
    out = tmp_path / "r.json"
    assert main(["eval", str(tmp_path), "--model", "tiny", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 2 and result["mean"]["all_bit_exact"]
    sizes = [r["bytes"] for r in result["per_image"]]
    assert result["mean"]["bpp"] == np.mean([8 * b / (64 * 80) for b in sizes])



def test_encode_several_with_quality_and_rdo(tmp_path):
    import pytest
    from ecf_engine import QUALITIES, load, read_header
    names = []
    for i in range(2):
        names.append(tmp_path / f"{i}.png")
        Image.fromarray(smooth_image(64, 96, seed=i)).save(names[-1])
    assert main(["encode", *map(str, names), "--quality", "1", "--rdo", "2"]) == 0
    engine = load(QUALITIES[0])
    for name in names:
        bits = name.with_suffix(".ecf").read_bytes()
        assert read_header(bits).model_id == engine.model_id
        assert engine.decode(bits).shape == (64, 96, 3)
    with pytest.raises(SystemExit):
        main(["encode", *map(str, names), "-o", str(tmp_path / "x.ecf")])
    with pytest.raises(SystemExit):
        main(["encode", str(names[0]), "--quality", str(len(QUALITIES) + 1)])


def test_info_counts_the_y_substreams(tmp_path, capsys):
    src = tmp_path / "tall.png"
    Image.fromarray(smooth_image(300, 40, seed=5)).save(src)
    assert main(["encode", str(src), "-o", str(tmp_path / "t.ecf"), "--model", "tiny"]) == 0
    assert main(["info", str(tmp_path / "t.ecf")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["y_substreams"] == 2            # 320 rows: 20 latent rows
