"""int8 weights: symmetric per-output-channel quantization on the host, and the matmuls that use them.

Two methods, chosen by platform (DESIGN principle 6):
  "w8a8"         CPU. Activations are quantized per token at run time and the dot is int8 x int8 with int32
                 accumulation, which XLA:CPU runs fast; converting int8 weights to float inside a matmul is
                 slow there, because XLA:CPU materialises the converted float copy of the weights.
  "weight_only"  TPU/GPU. Activations stay in the model dtype; the int8 kernel is converted inside the matmul
                 (XLA fuses the convert there), so only weight memory and bandwidth shrink.

A kernel `w: [in, out]` is stored as `q: [in, out] int8` and `scale: [out] float32` with `w ~= q * scale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

QuantMethod = Literal["w8a8", "weight_only"]

QUANTIZATION_CHOICES = ("int8",)
"""The values `--quantization` accepts (spelled out in the CLI too, so `--help` does not import JAX)."""

INT8_MAX = 127
"""Symmetric range [-127, 127]: dropping -128 keeps q -> -q exact and zero exactly representable."""

MIN_W8A8_ROWS = 2
"""A W8A8 matmul's rows are padded up to at least this many: XLA:CPU's (YNNPACK's) int8 dot is slow for a
single row and fast from two. Measured with SmolLM2-sized int8 matmul stacks (30 layers + LM head,
jax 0.10.2): 259 ms at 1 row, 24-31 ms at 2, 28-35 ms at 4, 46-51 ms at 16 (float32 at 1 row: 29-32 ms).
An earlier padding to 16 rows made a batch-1 decode step 62 ms instead of 41."""


@dataclass(frozen=True)
class Quantization:
    """How a quantized model runs its int8 projections."""

    method: QuantMethod

    @classmethod
    def for_platform(cls, backend: str | None = None) -> Quantization:
        """W8A8 on CPU, weight-only int8 on TPU/GPU (`backend` defaults to JAX's default backend)."""
        return cls("w8a8" if (backend or jax.default_backend()) == "cpu" else "weight_only")


def resolve_quantization(name: str | None) -> Quantization | None:
    """The `--quantization` flag's value -> the method for this platform (None: no quantization)."""
    if name is None:
        return None
    if name not in QUANTIZATION_CHOICES:
        raise ValueError(
            f"quantization '{name}' is not supported (supported: {', '.join(QUANTIZATION_CHOICES)})"
        )
    return Quantization.for_platform()


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Host side: a float kernel [in, out] -> int8 kernel [in, out] and float32 scale [out], w ~= q * scale.

    Each output channel (column) gets scale = absmax / 127, so its largest weight maps to +-127 and every
    element's rounding error is at most scale / 2. An all-zero column gets scale 1 (any positive scale
    represents it exactly) instead of a division by zero.
    """
    w = np.asarray(weight, np.float32)
    absmax = np.max(np.abs(w), axis=0)
    scale = np.where(absmax > 0, absmax / INT8_MAX, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def w8a8_matmul(
    x: jax.Array, kernel: jax.Array, scale: jax.Array, out_dtype: jnp.dtype | None = None
) -> jax.Array:
    """x [..., in] float @ int8 kernel [in, out] with per-channel `scale` [out] -> [..., out] (x's dtype unless
    `out_dtype`), quantizing x per token (row) at run time and accumulating int8 x int8 in int32."""
    lead, width = x.shape[:-1], x.shape[-1]
    rows = int(np.prod(lead))
    x32 = x.reshape(rows, width).astype(jnp.float32)  # [rows, in]
    padded = max(rows, MIN_W8A8_ROWS)  # shapes are static: a trace-time choice
    if padded != rows:
        x32 = jnp.pad(x32, ((0, padded - rows), (0, 0)))  # zero rows quantize to zero, sliced off below
    absmax = jnp.max(jnp.abs(x32), axis=-1, keepdims=True)  # [padded, 1]: one scale per token
    act_scale = jnp.where(absmax > 0, absmax / INT8_MAX, 1.0)  # a zero row: any scale, avoid 0 / 0
    xq = jnp.clip(jnp.round(x32 / act_scale), -INT8_MAX, INT8_MAX).astype(jnp.int8)
    acc = jax.lax.dot_general(
        xq, kernel, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32
    )  # [rows, out] int32, exact: |sum| <= in * 127**2 < 2**31 for any `in` up to 133k
    out = acc.astype(jnp.float32) * act_scale * scale.astype(jnp.float32)
    return out[:rows].reshape(*lead, kernel.shape[1]).astype(out_dtype or x.dtype)


def weight_only_matmul(
    x: jax.Array, kernel: jax.Array, scale: jax.Array, out_dtype: jnp.dtype | None = None
) -> jax.Array:
    """x [..., in] @ int8 kernel [in, out] converted to x's dtype, times the per-channel `scale` [out]
    (the scale is applied to the float32 accumulator, after the dot, since it is constant along `in`)."""
    acc = jnp.matmul(x, kernel.astype(x.dtype), preferred_element_type=jnp.float32)
    return (acc * scale.astype(jnp.float32)).astype(out_dtype or x.dtype)


_MATMULS = {"w8a8": w8a8_matmul, "weight_only": weight_only_matmul}


class Int8Projection(nnx.Module):
    """A linear projection stored as an int8 kernel [in, out] plus a float32 scale per output channel.

    `axes` are the kernel's logical axes; the scale runs along the kernel's output axis, so it carries that
    name. Without rngs both start as placeholders for a loader (zeros and ones); with rngs the kernel is a
    small random normal quantized on the host (for random-weight models; not under `nnx.eval_shape`).
    """

    def __init__(
        self, shape: tuple[int, int], axes: tuple[str, str], quantization: Quantization, rngs: nnx.Rngs | None
    ):
        if rngs is None:
            kernel = jnp.zeros(shape, jnp.int8)
            scale = jnp.ones((shape[1],), jnp.float32)
        else:
            q, s = quantize_per_channel(np.asarray(0.02 * jax.random.normal(rngs.params(), shape)))
            kernel, scale = jnp.asarray(q), jnp.asarray(s)
        self.kernel = nnx.Param(kernel, logical_axes=axes)
        self.scale = nnx.Param(scale, logical_axes=(axes[1],))
        self.method = quantization.method

    def __call__(self, x: jax.Array, out_dtype: jnp.dtype | None = None) -> jax.Array:
        """x: [..., in] -> [..., out] in x's dtype (or `out_dtype`)."""
        return _MATMULS[self.method](x, self.kernel[...], self.scale[...], out_dtype)
