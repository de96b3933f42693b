"""Products of one to four rows with a feature-major float32 kernel by a native XLA:CPU kernel
(kernels/matvec.cc, built by `native_library`).

A decode step at batch 1-4 streams every weight once. XLA:CPU's dots do that on one thread, and slowly
for small projections; the kernel splits the output features over the intra-op pool. A 30-layer chain of
SmolLM2-135M's projections plus its LM head (2-core AVX-512 CPU, `/tmp` ABBA, 2026-11-27), XLA vs this:
33.1 vs 28.2 ms at 1 row, 46.1 vs 33.2 at 2, 42.0 vs 35.0 at 4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxserve.modeling import native_library

MAX_ROWS = 4


def supports(rows: jax.Array, kernel: jax.Array) -> bool:
    """Whether `product` can take these [R, I] rows and [O, I] kernel in the computation being traced."""
    return (
        1 <= rows.shape[0] <= MAX_ROWS
        and rows.dtype == jnp.float32
        and kernel.dtype == jnp.float32
        and native_library.single_device_cpu_reason() is None
    )


def product(rows: jax.Array, kernel: jax.Array) -> jax.Array:
    """rows [R, I] times kernel [O, I] transposed -> [R, O] float32 (`supports` must hold)."""
    shape = jax.ShapeDtypeStruct((rows.shape[0], kernel.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(native_library.MATVEC_TARGET, shape)(rows, kernel)
