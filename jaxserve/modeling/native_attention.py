"""Paged attention as a native XLA:CPU kernel (kernels/paged_attention.cc, built by `native_library`).

The kernel computes `reference_paged_attention`, reading each query token's keys and values straight from
the page pool through its row's block table. For decode steps it replaces the chunked pure-JAX path, whose
gather-and-transpose copies and tiny batched dots XLA:CPU runs slowly, and for prompt chunks the
reference, which gathers the row's whole block-table bucket (numbers in the README's Performance section).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.modeling import native_library


def unsupported_reason(q: jax.Array, layer_cache: tuple[jax.Array, jax.Array]) -> str | None:
    """Why the kernel cannot run on these shapes and dtypes here (None when it can). Only a call it could
    take builds it (`native_library.available()`), so TPU, GPU and bfloat16 runs never reach the compiler."""
    if jax.default_backend() == "cpu" and any(x.dtype != jnp.float32 for x in (q, *layer_cache)):
        return "it takes float32 queries and caches only"
    return native_library.single_device_cpu_reason()


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
    """`reference_paged_attention` for q [B, T, K, G, H] by the native kernel (`unsupported_reason` None).

    Query tokens at positions past the block table's span (padding) get zeros.
    """
    return jax.ffi.ffi_call(native_library.ATTENTION_TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32))(
        q,
        layer_cache[0],
        layer_cache[1],
        block_tables.astype(jnp.int32),
        positions.astype(jnp.int32),
        scale=np.float32(q.shape[-1] ** -0.5 if scale is None else scale),
        softcap=np.float32(logit_softcap or 0.0),
        window=np.int32(sliding_window or 0),
    )
