"""Building the native kernels: one library for every source, cached, and switched off on request."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from jaxserve.modeling import native_library

pytestmark = pytest.mark.skipif(
    not native_library.available(), reason="the native kernels could not be built (no C++ compiler?)"
)


def test_the_build_is_cached_and_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native_library.CACHE_ENV, str(tmp_path))
    built = native_library.library_path.__wrapped__()
    assert built is not None and built.parent == tmp_path and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    assert native_library.library_path.__wrapped__() == built
    assert built.stat().st_mtime_ns == stamp  # found, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no build leftovers

    monkeypatch.setenv(native_library.DISABLE_ENV, "0")
    assert native_library.library_path.__wrapped__() is None
    monkeypatch.setenv(native_library.DISABLE_ENV, "1")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert native_library.library_path.__wrapped__() is None


def test_the_library_exports_every_targets_handler() -> None:
    assert set(native_library.TARGETS) == {native_library.ATTENTION_TARGET, native_library.MATVEC_TARGET}
    path = native_library.library_path()
    assert path is not None
    library = ctypes.CDLL(str(path))
    for symbol in native_library.TARGETS.values():
        assert hasattr(library, symbol), symbol
