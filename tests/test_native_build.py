"""Where the native code is built and loaded from (csrc/__init__.py): only a cache folder of
this user's own (mode 0700, ownership checked), else a fresh private temporary folder; never
a folder another local user could have created or could write."""
from __future__ import annotations

import ctypes
import os
import shutil
import stat

import pytest

from ecf_engine import csrc

POSIX = hasattr(os, "getuid")
needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
pytestmark = pytest.mark.skipif(not POSIX, reason="POSIX ownership and modes")


def test_cache_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("ECF_CACHE", str(tmp_path / "a" / "cache"))
    cache = csrc.private_cache_dir()
    assert cache == (tmp_path / "a" / "cache").resolve()
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


def test_an_existing_cache_of_this_user_is_tightened(tmp_path, monkeypatch):
    (tmp_path / "cache").mkdir(mode=0o755)
    os.chmod(tmp_path / "cache", 0o755)
    monkeypatch.setenv("ECF_CACHE", str(tmp_path / "cache"))
    assert stat.S_IMODE(os.stat(csrc.private_cache_dir()).st_mode) == 0o700


@pytest.mark.parametrize("where", ["cache", "parent"])
def test_a_folder_others_can_write_is_refused(tmp_path, monkeypatch, where):
    (tmp_path / "parent" / "cache").mkdir(parents=True)
    os.chmod(tmp_path / "parent" / ("cache" if where == "cache" else ""), 0o777)    # no sticky bit
    monkeypatch.setenv("ECF_CACHE", str(tmp_path / "parent" / "cache"))
    with pytest.raises(PermissionError, match="another user|other users"):
        csrc.private_cache_dir()


def test_a_cache_of_another_user_is_refused(tmp_path, monkeypatch):
    (tmp_path / "cache").mkdir(mode=0o700)
    monkeypatch.setenv("ECF_CACHE", str(tmp_path / "cache"))
    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 1)        # the folder now belongs to "someone else"
    with pytest.raises(PermissionError):
        csrc.private_cache_dir()


@needs_cc
def test_library_builds_in_the_private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECF_CACHE", str(tmp_path / "cache"))
    lib = csrc.load_c_library()
    assert isinstance(lib, ctypes.CDLL), lib
    built = list((tmp_path / "cache").glob("ecf-native-*.so"))
    assert len(built) == 1 and os.stat(built[0]).st_uid == os.getuid()


@needs_cc
def test_unsafe_cache_falls_back_to_a_private_temporary_build(tmp_path, monkeypatch):
    unsafe = tmp_path / "cache"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    monkeypatch.setenv("ECF_CACHE", str(unsafe))
    lib = csrc.load_c_library()
    assert isinstance(lib, ctypes.CDLL), lib
    assert list(unsafe.iterdir()) == []                        # nothing built or loaded there


def test_egr_extension_builds_in_the_private_cache(tmp_path, monkeypatch):
    from torch.utils import cpp_extension
    seen = {}
    monkeypatch.setenv("ECF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    monkeypatch.setattr(cpp_extension, "load", lambda name, sources, **kw: seen.update(kw, name=name) or "module")
    assert csrc.build_egr_extension(cuda=False) == "module"
    build = tmp_path / "cache" / "torch_extensions" / seen["name"]
    assert seen["build_directory"] == str(build.resolve())
    assert stat.S_IMODE(os.stat(build).st_mode) == 0o700
