"""benchmarks/compare_rd.py: candidate weights against the shipped ones at equal rate."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("compare_rd", Path(__file__).parents[1] / "benchmarks" / "compare_rd.py")
compare_rd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_rd)

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
