"""Native XLA:CPU kernels: C++ built on first use, loaded once and registered as XLA FFI targets.

Every source under kernels/ goes into one shared library: the paged attention kernel (used by
`native_attention`) and the matrix-vector products (used by `native_matvec`).

Building needs a C++17 compiler (`$CXX`, else `c++`); jaxlib ships the FFI headers. The library is cached
under `$JAXSERVE_KERNEL_CACHE` (default ~/.cache/jaxserve/kernels), keyed by the sources, the compiler,
the flags, jaxlib and the CPU, so a machine builds it once (~5 s). Without a compiler, or with
JAXSERVE_NATIVE_KERNELS=0, `available()` is False and the model keeps its pure-JAX paths.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import jax

LOGGER = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).parent / "kernels"
SOURCES = (KERNEL_DIR / "paged_attention.cc", KERNEL_DIR / "matvec.cc")
HEADERS = (KERNEL_DIR / "work_queue.h",)
ATTENTION_TARGET = "jaxserve_paged_attention"
MATVEC_TARGET = "jaxserve_matvec"
TARGETS = {ATTENTION_TARGET: "JaxservePagedAttention", MATVEC_TARGET: "JaxserveMatVec"}
"""FFI target name -> the handler symbol the library exports."""

# -ffast-math lets GCC call glibc's vector expf (libmvec). It is given to the compile step only: linking a
# shared library with it would pull in crtfastmath.o, which flushes denormals for the whole process.
COMPILE_FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-fopenmp-simd", "-ffast-math")
DISABLE_ENV = "JAXSERVE_NATIVE_KERNELS"
CACHE_ENV = "JAXSERVE_KERNEL_CACHE"


def _link_flags() -> tuple[str, ...]:
    on_glibc_x86 = platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
    return ("-shared", "-lmvec") if on_glibc_x86 else ("-shared",)


def _cpu_identity() -> str:
    """The CPU model and feature flags (-march=native code must not be loaded on another CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "jaxserve" / "kernels"
    return Path(os.environ.get(CACHE_ENV) or default)


def _build(compiler: str, key: str) -> Path:
    """Compile and link the kernels into the cache (atomically: parallel processes may race here)."""
    target = _cache_dir() / f"kernels-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    include = jax.ffi.include_dir()
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        objects = [str(Path(work) / f"{source.stem}.o") for source in SOURCES]
        lib = Path(work) / "kernels.so"
        commands = [
            [compiler, *COMPILE_FLAGS, f"-I{include}", "-c", str(source), "-o", obj]
            for source, obj in zip(SOURCES, objects, strict=True)
        ]
        for command in [*commands, [compiler, *objects, "-o", str(lib), *_link_flags()]]:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
        os.replace(lib, target)
    return target


@functools.cache
def library_path() -> Path | None:
    """The built kernel library, building it if needed; None (with the reason logged) when it cannot be."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        LOGGER.info("native kernels are disabled by %s=0", DISABLE_ENV)
        return None
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        LOGGER.warning("no C++ compiler ($CXX or c++): the model keeps its pure-JAX paths")
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
        key = hashlib.sha256(
            "\0".join(
                (
                    *(source.read_text() for source in (*SOURCES, *HEADERS)),
                    version,
                    *COMPILE_FLAGS,
                    *_link_flags(),
                    metadata.version("jaxlib"),
                    _cpu_identity(),
                )
            ).encode()
        ).hexdigest()
        return _build(compiler, key)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        LOGGER.warning("could not build the native kernels (%s); keeping the pure-JAX paths", error)
        return None


@functools.cache
def available() -> bool:
    """Whether the kernels are built, loaded and registered with XLA:CPU (once per process)."""
    path = library_path()
    if path is None:
        return False
    library = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return True


def single_device_cpu_reason() -> str | None:
    """Why a native kernel cannot run in the computation being traced (None when it can): they run on
    XLA:CPU, on one device (a call on a mesh of several would not be partitioned), once built."""
    if jax.default_backend() != "cpu":
        return "it runs on XLA:CPU only"
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        return "it runs on a single device (the pure-JAX paths shard over a mesh)"
    if not available():
        return "it could not be built here (see the log)"
    return None
