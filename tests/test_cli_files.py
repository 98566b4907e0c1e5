"""`ecf` and files: no data loss (overwrite refusal, default names, collisions, checks before
work, atomic writes), stdin / stdout, folders, threads."""
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ecf_engine import cli
from ecf_engine.cli import main

from conftest import smooth_image

TINY = ["--model", "tiny"]


def _image(path, h=64, w=96, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_image(h, w, seed=seed)).save(path)
    return path


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_decode_beside_the_original_keeps_it(tmp_path, capsys):
    src = _image(tmp_path / "x.png")
    original = src.read_bytes()
    assert main(["encode", str(src), *TINY]) == 0
    assert main(["decode", str(tmp_path / "x.ecf"), *TINY]) == 0
    assert src.read_bytes() == original                          # x.ecf -> x.decoded.png, not x.png
    assert Image.open(tmp_path / "x.decoded.png").size == (96, 64)


def test_nothing_is_overwritten_without_force(tmp_path, capsys):
    src = _image(tmp_path / "x.png")
    assert main(["encode", str(src), *TINY]) == 0
    assert main(["decode", str(tmp_path / "x.ecf"), *TINY]) == 0
    before = _snapshot(tmp_path)
    (tmp_path / "x.ecf").write_bytes(b"keep me")
    assert main(["encode", str(src), *TINY]) == 1
    assert "exists" in capsys.readouterr().err and (tmp_path / "x.ecf").read_bytes() == b"keep me"
    (tmp_path / "x.ecf").write_bytes(before[tmp_path.joinpath("x.ecf").relative_to(tmp_path)])
    assert main(["decode", str(tmp_path / "x.ecf"), *TINY]) == 1
    assert main(["decode", str(tmp_path / "x.ecf"), "-o", str(src), *TINY]) == 1
    assert _snapshot(tmp_path) == before
    assert main(["encode", str(src), *TINY, "-f"]) == 0
    assert main(["decode", str(tmp_path / "x.ecf"), "-o", str(tmp_path / "x.decoded.png"), *TINY, "--force"]) == 0


def test_same_stem_is_refused_before_any_work(tmp_path, capsys):
    a, b = _image(tmp_path / "a.png"), tmp_path / "a.jpg"
    Image.fromarray(smooth_image(64, 96, seed=1)).save(b)
    assert main(["encode", str(a), str(b), *TINY]) == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "a.jpg" in err and "a.ecf" in err
    assert not (tmp_path / "a.ecf").exists()
    assert main(["encode", str(tmp_path), "-o", str(tmp_path / "out"), *TINY]) == 1        # in a folder too
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, output, message", [
    ("encode", "x.png", "written as .ecf"), ("encode", "x", "written as .ecf"),
    ("decode", "x.jpg", "lossless"), ("decode", "out.noext", "lossless"),
    ("decode", "missing/x.png", "does not exist"), ("encode", "missing/x.ecf", "does not exist"),
])
def test_output_is_checked_before_any_work(tmp_path, capsys, monkeypatch, command, output, message):
    src = _image(tmp_path / "x.png")
    assert main(["encode", str(src), *TINY]) == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()

    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")
    monkeypatch.setattr(cli, "_load", no_work)
    source = src if command == "encode" else tmp_path / "x.ecf"
    assert main([command, str(source), "-o", str(tmp_path / output), *TINY, "-f"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert _snapshot(tmp_path) == before


def test_an_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    src = _image(tmp_path / "x.png")

    def interrupted(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", interrupted)
    assert main(["encode", str(src), *TINY]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]   # no x.ecf, no temporary file
    monkeypatch.undo()
    target = tmp_path / "x.ecf"
    cli.write_atomic(target, b"first", force=False)
    with pytest.raises(cli.CLIError, match="exists"):
        cli.write_atomic(target, b"second", force=False)
    cli.write_atomic(target, b"third", force=True)
    assert target.read_bytes() == b"third" and sorted(p.name for p in tmp_path.iterdir()) == ["x.ecf", "x.png"]


class _Pipe(io.TextIOWrapper):
    def __init__(self, data=b""):
        super().__init__(io.BytesIO(data))

    def isatty(self):
        return False


def test_stdin_to_stdout_round_trip(tmp_path, monkeypatch):
    src = _image(tmp_path / "x.png")
    monkeypatch.setattr(sys, "stdin", _Pipe(src.read_bytes()))
    monkeypatch.setattr(sys, "stdout", out := _Pipe())
    assert main(["encode", "-", *TINY]) == 0                    # stdin: output defaults to stdout
    bits = out.buffer.getvalue()
    monkeypatch.setattr(sys, "stdin", _Pipe(bits))
    monkeypatch.setattr(sys, "stdout", out := _Pipe())
    assert main(["decode", "-", "-o", "-", *TINY]) == 0
    png = out.buffer.getvalue()
    monkeypatch.undo()
    assert main(["encode", str(src), *TINY]) == 0
    assert (tmp_path / "x.ecf").read_bytes() == bits             # same stream as from the file
    assert main(["decode", str(tmp_path / "x.ecf"), *TINY]) == 0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(Image.open(tmp_path / "x.decoded.png")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.decoded.png", "x.ecf", "x.png"]


def test_binary_is_not_written_to_a_terminal(tmp_path, capsys, monkeypatch):
    src = _image(tmp_path / "x.png")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["encode", str(src), "-o", "-", *TINY]) == 1
    assert "terminal" in capsys.readouterr().err


@pytest.mark.slow
def test_real_pipe_between_processes(tmp_path):
    src = _image(tmp_path / "x.png")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    enc = subprocess.run([sys.executable, "-m", "ecf_engine.cli", "encode", "-", *TINY], input=src.read_bytes(),
                         capture_output=True, check=True, env=env)
    dec = subprocess.run([sys.executable, "-m", "ecf_engine.cli", "decode", "-", "-o", "-", *TINY],
                         input=enc.stdout, capture_output=True, check=True, env=env)
    assert Image.open(io.BytesIO(dec.stdout)).size == (96, 64) and b"stdin -> stdout" in dec.stderr


def test_folders_recursive_with_summary(tmp_path, capsys):
    data = tmp_path / "in"
    for rel in ("a.png", "b.png", "sub/c.png", "sub/deeper/d.png"):
        _image(data / rel, seed=len(rel))
    (data / "notes.txt").write_text("not an image")
    assert main(["encode", str(data), "-o", str(tmp_path / "flat"), *TINY]) == 0
    assert sorted(map(str, _snapshot(tmp_path / "flat"))) == ["a.ecf", "b.ecf"]
    assert main(["encode", str(data), "-r", "-o", str(tmp_path / "tree"), *TINY]) == 0
    err = capsys.readouterr().err
    assert "encoded 4 of 4 images" in err.splitlines()[-1]
    assert sorted(map(str, _snapshot(tmp_path / "tree"))) == ["a.ecf", "b.ecf", "sub/c.ecf", "sub/deeper/d.ecf"]
    assert main(["decode", str(tmp_path / "tree"), "-r", "-o", str(tmp_path / "back"), *TINY]) == 0
    assert "decoded 4 of 4 streams" in capsys.readouterr().err.splitlines()[-1]
    back = sorted(map(str, _snapshot(tmp_path / "back")))
    assert back == ["a.decoded.png", "b.decoded.png", "sub/c.decoded.png", "sub/deeper/d.decoded.png"]
    assert main(["encode", str(data), "-r", "-o", str(tmp_path / "tree"), *TINY]) == 1      # all exist
    assert main(["encode", str(data), "-o", str(tmp_path / "no" / "such"), *TINY]) == 1
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["encode", str(empty), "-o", str(tmp_path / "o"), *TINY]) == 1
    assert "no image files" in capsys.readouterr().err


def test_several_files_into_a_folder_and_stdout_takes_one(tmp_path, capsys):
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png", seed=1)
    assert main(["encode", str(a), str(b), "-o", str(tmp_path / "out"), *TINY]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ecf", "b.ecf"]
    assert main(["encode", str(a), str(b), "-o", "-", *TINY]) == 1
    assert "stdout" in capsys.readouterr().err
    assert main(["encode", str(a), str(b), "-o", str(a), *TINY]) == 1         # a file, not a folder
    assert "not a folder" in capsys.readouterr().err


def test_thread_options(monkeypatch, capsys):
    import torch
    cores = cli.available_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert cli.thread_count(cores + 5) == cores and "lowered" in capsys.readouterr().err
    assert cli.thread_count(1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli.thread_count(None) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= cli.thread_count(None) <= cores
    idle = cli.idle_cores()
    assert idle is None or 0 <= idle <= cores + 0.01
    before = torch.get_num_threads()
    assert main(["info", "--threads", "1", "nonexistent.ecf"]) == 1
    assert torch.get_num_threads() == before                  # in-process calls leave the count as found


def test_default_threads_back_off_when_the_cores_are_busy():
    """One busy-looping process per core: no core is free, so the default is one thread."""
    cores = cli.available_cores()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.3)
        assert cli.default_threads() == 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
