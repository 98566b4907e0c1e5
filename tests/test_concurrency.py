import threading
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


def test_rdo_from_two_threads_on_one_engine(tiny_engine):
    """Online RDO in two threads at once on one engine (and plain coding in a third): the same
    streams as one after the other, and the shared model's parameters keep their flags."""
    images = [smooth_image(64, 64, seed=s) for s in (3, 4)]
    flags = [p.requires_grad for p in tiny_engine.model.parameters()]
    expected = [tiny_engine.encode(im, rdo_iters=8) for im in images]
    plain = tiny_engine.encode(images[0])
    assert expected[0] != plain                     # RDO changes what gets coded
    start = threading.Barrier(3)

    def rdo(i):
        start.wait()
        return tiny_engine.encode(images[i], rdo_iters=8)

    def coding():
        start.wait()
        return [tiny_engine.decode(tiny_engine.encode(images[0])) is not None for _ in range(4)]

    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = [pool.submit(rdo, 0), pool.submit(rdo, 1), pool.submit(coding)]
        results = [job.result() for job in jobs]
    assert results[:2] == expected
    assert [p.requires_grad for p in tiny_engine.model.parameters()] == flags


def test_decode_keeps_a_bounded_model_cache(monkeypatch, tmp_path):
    """ecf_engine.decode() loads the model a stream names and keeps the most recently used
    ENGINE_CACHE_SIZE engines, not one per model ever seen."""
    import ecf_engine
    from ecf_engine import weights
    paths = {}
    for seed in range(3):                         # three models decode() can find by their ids
        model, _ = weights.load_weights("tiny", seed=seed)
        path = tmp_path / f"tiny-{seed}.safetensors"
        paths[weights.save_weights(model, path)] = path
    monkeypatch.setattr(weights, "shipped_models", lambda: dict(paths))
    image = smooth_image(32, 32)
    streams = {mid: ecf_engine.load(path).encode(image) for mid, path in paths.items()}
    monkeypatch.setattr(ecf_engine, "ENGINE_CACHE_SIZE", 2)
    monkeypatch.setattr(ecf_engine, "_engines", type(ecf_engine._engines)())
    a, b, c = paths
    for mid in (a, b, a, c):
        ecf_engine.decode(streams[mid])
    assert list(ecf_engine._engines) == [a, c]      # b was the least recently used
