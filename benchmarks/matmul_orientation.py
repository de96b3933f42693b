"""Projection matmuls in the two orientations, on a SmolLM2-shaped stack: the evidence for a layout change.

    cd benchmarks && ../.venv/bin/python matmul_orientation.py [--rows 1 4 16 64] [--layers 30]

jaxserve computes every projection row-major: activations [rows, in] @ kernel [in, out]. This times the same
work feature-major: kernel stored [out, in] @ activations kept as [in, rows] all through the stack, so the
dot's small operand is the activations and XLA:CPU's dot library streams the weights once. Each layer is
an up projection (576 -> 1536), tanh, a down projection (1536 -> 576) and a residual add: 2 x 3.5 MB of
float32 weights per layer, distinct per layer so they do not stay in cache. Prints the median time of the
whole stack per row count and orientation, and checks the two give the same result; nothing else.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from sampler_bench import median_ms  # a sibling module: these scripts run as files

HIDDEN, INTERMEDIATE = 576, 1536


def row_major(x: jax.Array, ups: list[jax.Array], downs: list[jax.Array]) -> jax.Array:
    """x [rows, hidden]; kernels [in, out]."""
    for up, down in zip(ups, downs, strict=True):
        x = x + jnp.tanh(x @ up) @ down
    return x


def feature_major(x: jax.Array, ups: list[jax.Array], downs: list[jax.Array]) -> jax.Array:
    """x [rows, hidden], transposed once to [hidden, rows]; kernels [out, in]."""
    h = x.T
    for up, down in zip(ups, downs, strict=True):
        h = h + down @ jnp.tanh(up @ h)
    return h.T


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ups = [rng.standard_normal((HIDDEN, INTERMEDIATE), dtype=np.float32) * 0.02 for _ in range(args.layers)]
    downs = [rng.standard_normal((INTERMEDIATE, HIDDEN), dtype=np.float32) * 0.02 for _ in range(args.layers)]
    row_kernels = ([jnp.asarray(w) for w in ups], [jnp.asarray(w) for w in downs])
    feature_kernels = ([jnp.asarray(w.T.copy()) for w in ups], [jnp.asarray(w.T.copy()) for w in downs])
    row_fn, feature_fn = jax.jit(row_major), jax.jit(feature_major)

    print(f"{'rows':>4} {'row-major ms':>12} {'feature-major ms':>16} {'feature/row':>11}")
    for rows in args.rows:
        x = jnp.asarray(rng.standard_normal((rows, HIDDEN), dtype=np.float32))
        np.testing.assert_allclose(
            np.asarray(row_fn(x, *row_kernels)), np.asarray(feature_fn(x, *feature_kernels)), atol=1e-4
        )
        row_ms = median_ms(row_fn, (x, *row_kernels), args.repeats)
        feature_ms = median_ms(feature_fn, (x, *feature_kernels), args.repeats)
        print(f"{rows:>4} {row_ms:>12.1f} {feature_ms:>16.1f} {feature_ms / row_ms:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
