"""Paged attention as a native XLA:CPU kernel: C++ built on first use and called through the XLA FFI.

The kernel (kernels/paged_attention.cc) computes `reference_paged_attention`, reading each query token's
keys and values straight from the page pool through its row's block table. For decode steps it replaces
the chunked pure-JAX path, whose gather-and-transpose copies and tiny batched dots XLA:CPU runs slowly,
and for prompt chunks the reference, which gathers the row's whole block-table bucket (numbers in the
README's Performance section).

Building needs a C++17 compiler (`$CXX`, else `c++`); jaxlib ships the FFI headers. The library is cached
under `$JAXSERVE_KERNEL_CACHE` (default ~/.cache/jaxserve/kernels), keyed by the source, the compiler, the
flags, jaxlib and the CPU, so a machine builds it once (~5 s). Without a compiler, or with
JAXSERVE_NATIVE_KERNELS=0, `available()` is False and "auto" attention keeps the pure-JAX paths.
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
import jax.numpy as jnp
import numpy as np

LOGGER = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "kernels" / "paged_attention.cc"
TARGET = "jaxserve_paged_attention"
SYMBOL = "JaxservePagedAttention"

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
    """Compile and link the kernel into the cache (atomically: parallel processes may race here)."""
    target = _cache_dir() / f"paged_attention-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    include = jax.ffi.include_dir()
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        obj, lib = Path(work) / "kernel.o", Path(work) / "kernel.so"
        for command in (
            [compiler, *COMPILE_FLAGS, f"-I{include}", "-c", str(SOURCE), "-o", str(obj)],
            [compiler, str(obj), "-o", str(lib), *_link_flags()],
        ):
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
        LOGGER.warning("no C++ compiler ($CXX or c++): attention keeps the pure-JAX paths")
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
        key = hashlib.sha256(
            "\0".join(
                (
                    SOURCE.read_text(),
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
        LOGGER.warning("could not build the native attention kernel (%s); keeping the pure-JAX paths", error)
        return None


@functools.cache
def available() -> bool:
    """Whether the kernel is built, loaded and registered with XLA:CPU (once per process)."""
    path = library_path()
    if path is None:
        return False
    library = ctypes.cdll.LoadLibrary(str(path))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(getattr(library, SYMBOL)), platform="cpu")
    return True


def unsupported_reason(q: jax.Array, layer_cache: tuple[jax.Array, jax.Array]) -> str | None:
    """Why the kernel cannot run on these shapes and dtypes here (None when it can). Only a call it could
    take builds it (`available()`), so TPU, GPU and bfloat16 runs never reach the compiler."""
    if jax.default_backend() != "cpu":
        return "it runs on XLA:CPU only"
    if any(x.dtype != jnp.float32 for x in (q, *layer_cache)):
        return "it takes float32 queries and caches only"
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        return "it runs on a single device (the pure-JAX paths shard over a mesh)"
    if not available():
        return "it could not be built here (see the log)"
    return None


def paged_attention(
    q: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array],
    block_tables: jax.Array,
    positions: jax.Array,
    sliding_window: int | None,
    *,
    scale: float | None = None,
    logit_softcap: float | None = None,
) -> jax.Array:
    """`reference_paged_attention` for q [B, T, K, G, H] by the native kernel (`available()` must be True).

    Query tokens at positions past the block table's span (padding) get zeros.
    """
    return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32))(
        q,
        layer_cache[0],
        layer_cache[1],
        block_tables.astype(jnp.int32),
        positions.astype(jnp.int32),
        scale=np.float32(q.shape[-1] ** -0.5 if scale is None else scale),
        softcap=np.float32(logit_softcap or 0.0),
        window=np.int32(sliding_window or 0),
    )
