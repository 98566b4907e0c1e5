"""`python -m benchmarks rd`'s reports: margins at equal rate, the met / not met verdict, the
variable-rate curve's checks."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:             # the suite is a folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import rd  # noqa: E402


def _entry(label, bpps, psnr_of):
    return {"label": label, "points": [{"bpp": b, "psnr": psnr_of(b)} for b in bpps]}


def test_targets_rows_margins_and_verdicts():
    curve = lambda b: 30 + 4 * np.log2(b)                                   # noqa: E731
    ours = [0.3, 0.5, 0.8, 1.2]
    results = {"codecs": {
        "ours": _entry("ours", ours, lambda b: curve(b) + 0.5),
        "jpeg420": _entry("JPEG 4:2:0", [0.1, 0.2, 0.4, 0.8, 1.6], curve),          # 0.5 dB below us
        "webp": _entry("WebP", [0.1, 0.2, 0.4, 0.8, 1.6], lambda b: curve(b) + 1),  # 0.5 dB above us
        "jpeg2000": _entry("JPEG 2000", [0.4, 0.8, 1.6, 3.2], curve),               # misses our lowest rate
        "hevc": _entry("HEVC", [0.1, 0.2, 0.4, 0.8, 1.6], lambda b: curve(b) + 1),   # 0.5 dB above us
    }}
    rows = {r.split(" | ")[0].removeprefix("| "): r for r in rd.targets_rows(results)[2:]}
    assert rows["beat JPEG 4:2:0 at every rate"].endswith("+0.50 dB, +0.50 dB, +0.50 dB, +0.50 dB | yes |")
    assert rows["beat WebP at every rate"].endswith("-0.50 dB, -0.50 dB, -0.50 dB, -0.50 dB | no |")
    assert rows["beat JPEG 2000 at every rate"].endswith("outside its range, +0.50 dB, +0.50 dB, +0.50 dB | no |")
    assert rows["beat jpeg444 at every rate"] == "| beat jpeg444 at every rate | not measured | — |"
    assert "| BD-rate +" in rows["BD-rate < 0 vs HEVC"] and rows["BD-rate < 0 vs HEVC"].endswith("| no |")


def test_targets_rows_hevc_verdict_follows_the_sign():
    curve = lambda b: 30 + 4 * np.log2(b)                                   # noqa: E731
    rates = [0.1, 0.2, 0.4, 0.8, 1.6]
    for offset, verdict in ((+0.5, "yes"), (-0.5, "no")):
        results = {"codecs": {"ours": _entry("ours", [0.3, 0.5, 0.8, 1.2], lambda b: curve(b) + offset),
                              "hevc": _entry("HEVC", rates, curve)}}
        row = rd.targets_rows(results)[-1]
        sign = "-" if offset > 0 else "+"
        assert row.startswith(f"| BD-rate < 0 vs HEVC | BD-rate {sign}") and row.endswith(f"| {verdict} |")
    results = {"codecs": {"ours": _entry("ours", [0.3, 0.5, 0.8], curve), "hevc": _entry("HEVC", rates, curve)}}
    assert rd.targets_rows(results)[-1] == "| BD-rate < 0 vs HEVC | BD-rate needs ≥ 4 rate points (has 3) | no |"


def test_targets_rows_for_the_ordo_entry():
    curve = lambda b: 30 + 4 * np.log2(b)                                   # noqa: E731
    results = {"codecs": {"ours": _entry("ours", [0.3, 0.5, 0.8, 1.2], lambda b: curve(b) - 0.5),
                          "ours-rdo": _entry("ours + oRDO", [0.3, 0.5, 0.8, 1.2], lambda b: curve(b) + 0.25),
                          "jpeg420": _entry("JPEG 4:2:0", [0.1, 0.2, 0.4, 0.8, 1.6], curve)}}
    assert rd.ours_keys(results) == ["ours", "ours-rdo"]
    assert rd.targets_rows(results)[2].endswith("-0.50 dB, -0.50 dB, -0.50 dB, -0.50 dB | no |")
    assert rd.targets_rows(results, "ours-rdo")[2].endswith("+0.25 dB, +0.25 dB, +0.25 dB, +0.25 dB | yes |")
    gain = rd.rdo_gain(results)[0]
    assert gain.startswith("ours + oRDO against plain encoding of the same models: BD-rate -")
    assert gain.endswith("BD-PSNR +0.75 dB.")
    del results["codecs"]["ours"]
    assert rd.rdo_gain(results) == []


def test_ordo_entry_of_other_models_is_dropped():
    def entry(ids):
        return {"points": [{"model_id": i} for i in ids]}
    codecs = {"ours": entry(["a", "b"]), "ours-rdo": entry(["b", "a"])}
    rd.drop_stale_rdo(codecs)
    assert "ours-rdo" in codecs
    codecs["ours"] = entry(["a", "c"])
    rd.drop_stale_rdo(codecs)
    assert "ours-rdo" not in codecs


def test_quality_grid_and_point_labels():
    assert rd.quality_grid(0.5) == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0]
    assert rd.quality_grid(3) == [1.0, 4.0, 7.0]
    assert rd.point_label({"setting": "small-mse0004", "quality": None}) == "small-mse0004"
    assert rd.point_label({"setting": "small-vr", "quality": 2.5}) == "small-vr Q=2.5"


def test_rate_monotonic_in_quality_is_per_image():
    curve = [{"quality": 1.0, "per_image_bpp": {"a": 0.1, "b": 0.2}},
             {"quality": 2.0, "per_image_bpp": {"a": 0.2, "b": 0.3}},
             {"quality": 1.5, "per_image_bpp": {"a": 0.15, "b": 0.25}}]
    assert rd.rate_monotonic(curve)
    curve[2]["per_image_bpp"]["b"] = 0.31          # image b: more bits at 1.5 than at 2
    assert not rd.rate_monotonic(curve)


def test_qualities_option_is_checked():
    assert rd._floats("7,1,4,4") == [1.0, 4.0, 7.0]
    with pytest.raises(SystemExit, match="comma-separated"):
        rd._floats("1,x")
    with pytest.raises(SystemExit, match="must lie in"):
        rd._floats("0.5,3")
