"""`python -m benchmarks compare`: candidate weights against the shipped ones at equal rate."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:             # the suite is a folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as suite  # noqa: E402
from benchmarks import compare_rd  # noqa: E402

# two images on straight-line curves of different slopes: 10 and 20 dB per bpp
BASE_BPP = [0.2, 0.4, 0.6, 0.8]


def _point(name, rows):
    return {"setting": name, "bpp": sum(r[0] for r in rows) / 2, "psnr": sum(r[1] for r in rows) / 2,
            "ms_ssim": 0.9, "per_image": [{"image": f"im{i}", "bpp": b, "psnr": p} for i, (b, p) in enumerate(rows)]}


def _base():
    return [_point(f"q{q}", [(b, 25 + 10 * b), (b, 28 + 20 * b)]) for q, b in enumerate(BASE_BPP, 1)]


def test_moving_along_the_curve_gains_nothing():
    cand = [_point("new", [(0.42, 25 + 10 * 0.42), (0.42, 28 + 20 * 0.42)])]
    rows, bd = compare_rd.compare(_base(), cand)
    assert rows[0]["base"]["setting"] == "q2"
    assert rows[0]["gain_db"] == pytest.approx(0, abs=1e-9)
    assert rows[0]["wins"] == 0
    assert abs(bd) < 0.3     # the same curve up to PCHIP's bend (a 0.1 dB gain here is ~ -1.7 %)


def test_a_better_model_gains_at_equal_rate_and_in_bd_rate():
    cand = [_point("new", [(0.62, 25 + 10 * 0.62 + 0.1), (0.62, 28 + 20 * 0.62 - 0.02)])]
    rows, bd = compare_rd.compare(_base(), cand)
    assert rows[0]["base"]["setting"] == "q3"
    assert rows[0]["gain_db"] == pytest.approx((0.1 - 0.02) / 2)
    assert rows[0]["wins"] == 1 and rows[0]["images"] == 2
    assert bd < 0


def test_different_images_are_refused():
    cand = [_point("new", [(0.4, 30), (0.4, 30)])]
    cand[0]["per_image"][1]["image"] = "other"
    with pytest.raises(SystemExit, match="different images"):
        compare_rd.compare(_base(), cand)


def _vr(offset_db: float):
    """A variable-rate candidate: 7 quality points on the base images' lines, offset_db better."""
    rates = [0.15, 0.25, 0.35, 0.5, 0.65, 0.75, 0.85]
    points = [_point("vr", [(b, 25 + 10 * b + offset_db), (b, 28 + 20 * b + offset_db)]) for b in rates]
    for q, p in enumerate(points, 1):
        p["quality"] = float(q)
    return points


def test_a_variable_rate_candidate_against_fixed_models():
    rows, swapped = compare_rd.compare(_base(), _vr(0.1))
    assert len(rows) == 7 and swapped is None            # several Q points share a base point: no swap
    assert all(r["gain_db"] == pytest.approx(0.1) for r in rows)
    assert compare_rd.curve_bd(_base(), _vr(0.1)) < 0
    assert compare_rd.curve_bd(_base(), _vr(-0.1)) > 0
    assert compare_rd.curve_bd(_base()[:3], _vr(0.1)) is None


def test_compare_command(tmp_path, capsys):
    def write(name, points):
        path = tmp_path / name
        path.write_text(json.dumps({"codecs": {"ours": {"points": points}}}))
        return path
    base, cand = write("base.json", _base()), write("cand.json", _vr(0.1))
    assert suite.main(["compare", str(cand), "--base", str(base)]) == 0
    out = capsys.readouterr().out
    assert "| q1 | vr Q=1 |" in out and "+0.100 dB | 2/2 |" in out
    assert "candidate curve against the base curve" in out and "swapped in" not in out
    with pytest.raises(SystemExit, match="does not exist"):
        suite.main(["compare", str(tmp_path / "missing.json"), "--base", str(base)])
    with pytest.raises(SystemExit, match="has no 'ours-rdo' entry"):
        suite.main(["compare", str(cand), "--base", str(base), "--key", "ours-rdo"])
