"""Bounded mutation fuzzing in CI; `python -m ecf_engine.fuzz --count 100000` for long runs."""
import time

import numpy as np

from ecf_engine import fuzz
from ecf_engine.engine import Engine

from conftest import smooth_image, tiny_model


def test_mutated_streams_end_in_ecf_errors_or_valid_images(tiny_engine):
    seed_stream = tiny_engine.encode(smooth_image(24, 40, seed=1))
    other_model, other_id = tiny_model(seed=99)
    other_stream = Engine(other_model, other_id).encode(smooth_image(24, 40, seed=2))
    count = 3500
    t = time.perf_counter()
    report = fuzz.run(tiny_engine, seed_stream, other_stream, count, seed=0, progress=False)
    assert report["failures"] == [], report["failures"][:3]
    assert report["inputs"] == count
    # each mutation kind was exercised, and plain corruption never slips through the CRC
    for kind in fuzz.KINDS:
        assert sum(report["counts"][kind].values()) == count // len(fuzz.KINDS)
    for kind in ("bitflip", "truncate", "other_model"):
        assert report["counts"][kind]["decoded"] == 0, kind
    assert time.perf_counter() - t < 300
