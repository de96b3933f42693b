"""A row argmax XLA:CPU runs at memory speed.

XLA:CPU lowers `jnp.argmax` over a long row to a (value, index) reduction it does not vectorise: 7.4-7.7
ms for [64, 49152] float32 on a 2-core AVX-512 CPU, where a plain max over the same rows takes 0.75 ms.
Taking the max of each group of GROUP entries first, then the argmax of the group maxima and of the one
group holding the winner, took 0.58 ms (a `/tmp` timing, 30 calls, 2026-11-27).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GROUP = 256


def first_argmax(x: jax.Array) -> jax.Array:
    """[B, V] -> [B] int32: the index of each row's first maximum, as `jnp.argmax(x, axis=-1)` gives it
    (a row of -inf gives 0). A row holding a NaN gets some index in range, not necessarily the NaN's.

    The first group holding the maximum holds its first occurrence, so ties resolve as in jnp.argmax."""
    rows, vocab = x.shape
    pad = -vocab % GROUP
    if pad:
        x = jnp.pad(x, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    groups = x.reshape(rows, -1, GROUP)
    best_group = jnp.argmax(groups.max(axis=-1), axis=-1)  # [B]
    within = jnp.take_along_axis(groups, best_group[:, None, None], axis=1)[:, 0]  # [B, GROUP]
    return (best_group * GROUP + jnp.argmax(within, axis=-1)).astype(jnp.int32)
