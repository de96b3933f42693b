"""Projection matmuls in two orientations, on a SmolLM2-shaped stack: the evidence for feature-major kernels.

    cd benchmarks && ../.venv/bin/python matmul_orientation.py [--rows 1 4 16 64 128 512] [--layers 30]

Row-major: activations [rows, in] @ kernel [in, out] (jaxserve's layout off CPU). Feature-major: kernel
stored [out, in] @ activations [in, rows], so the dot's small operand is the activations and XLA:CPU's dot
library streams the weights once; timed two ways: with the activations kept [in, rows] all through the
stack, and as jaxserve computes it on CPU, transposing them around each projection
(`jaxserve.modeling.decoder.feature_major_matmul`). Each layer is an up projection (576 -> 1536), tanh, a
down projection (1536 -> 576) and a residual add: 2 x 3.5 MB of float32 weights per layer, distinct per
layer so they do not stay in cache. Prints the median time of the whole stack per row count and variant,
and checks they give the same result; nothing else.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from sampler_bench import median_ms  # a sibling module: these scripts run as files

from jaxserve.modeling.decoder import feature_major_matmul

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


def per_projection(x: jax.Array, ups: list[jax.Array], downs: list[jax.Array]) -> jax.Array:
    """x [rows, hidden]; kernels [out, in]; each projection transposes its input and output."""
    for up, down in zip(ups, downs, strict=True):
        x = x + feature_major_matmul(jnp.tanh(feature_major_matmul(x, up)), down)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64, 128, 512])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ups = [rng.standard_normal((HIDDEN, INTERMEDIATE), dtype=np.float32) * 0.02 for _ in range(args.layers)]
    downs = [rng.standard_normal((INTERMEDIATE, HIDDEN), dtype=np.float32) * 0.02 for _ in range(args.layers)]
    row_kernels = ([jnp.asarray(w) for w in ups], [jnp.asarray(w) for w in downs])
    feature_kernels = ([jnp.asarray(w.T.copy()) for w in ups], [jnp.asarray(w.T.copy()) for w in downs])
    variants = {
        "row-major": (jax.jit(row_major), row_kernels),
        "feature-major": (jax.jit(feature_major), feature_kernels),
        "per projection": (jax.jit(per_projection), feature_kernels),
    }

    print(f"{'rows':>4} " + " ".join(f"{name + ' ms':>17}" for name in variants))
    for rows in args.rows:
        x = jnp.asarray(rng.standard_normal((rows, HIDDEN), dtype=np.float32))
        reference = np.asarray(row_major(x, *row_kernels))
        times = []
        for fn, kernels in variants.values():
            np.testing.assert_allclose(np.asarray(fn(x, *kernels)), reference, atol=1e-4)
            times.append(median_ms(fn, (x, *kernels), args.repeats))
        print(f"{rows:>4} " + " ".join(f"{ms:>17.1f}" for ms in times), flush=True)


if __name__ == "__main__":
    main()
