from concurrent.futures import ThreadPoolExecutor

import numpy as np

from conftest import smooth_image


def test_one_engine_from_several_threads(tiny_engine):
    images = [smooth_image(48 + 8 * i, 72, seed=i) for i in range(6)]
    expected = [tiny_engine.encode(im) for im in images]
    decoded = [tiny_engine.decode(b) for b in expected]

    def job(i):
        bits = tiny_engine.encode(images[i])
        return bits, tiny_engine.decode(bits)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, list(range(6)) * 3))
    for k, (bits, out) in enumerate(results):
        i = k % 6
        assert bits == expected[i]
        assert np.array_equal(out, decoded[i])
