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


def test_decode_keeps_a_bounded_model_cache(monkeypatch):
    """ecf_engine.decode() loads the model a stream names and keeps the most recently used
    ENGINE_CACHE_SIZE engines, not one per model ever seen."""
    import ecf_engine
    image = smooth_image(32, 32)
    streams = {name: ecf_engine.load(name).encode(image) for name in ecf_engine.QUALITIES[:3]}
    monkeypatch.setattr(ecf_engine, "ENGINE_CACHE_SIZE", 2)
    monkeypatch.setattr(ecf_engine, "_engines", type(ecf_engine._engines)())
    ids = {name: ecf_engine.read_header(bits).model_id for name, bits in streams.items()}
    a, b, c = ecf_engine.QUALITIES[:3]
    for name in (a, b, a, c):
        ecf_engine.decode(streams[name])
    assert list(ecf_engine._engines) == [ids[a], ids[c]]      # b was the least recently used
