"""Rotary position embeddings (RoFormer), with the context-extension variants Llama checkpoints use."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.modeling.config import RopeConfig


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> np.ndarray:
    """Per-pair rotation speeds, [head_dim // 2] float32, computed once on the host."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    inv_freq = 1.0 / (rope.theta**exponents)
    if rope.freq_divisors is not None:
        inv_freq = inv_freq / np.asarray(rope.freq_divisors, dtype=np.float64)
    elif rope.rope_type == "linear":
        inv_freq = inv_freq / rope.factor
    elif rope.rope_type == "llama3":
        inv_freq = _llama3_scaled(inv_freq, rope)
    return inv_freq.astype(np.float32)


def _llama3_scaled(inv_freq: np.ndarray, rope: RopeConfig) -> np.ndarray:
    """Llama 3.1 scaling: slow down long wavelengths by `factor`, keep short ones, blend in between."""
    old_context = rope.original_max_position_embeddings
    low_freq_wavelen = old_context / rope.low_freq_factor
    high_freq_wavelen = old_context / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    blended = (1 - smooth) * scaled / rope.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, blended, scaled)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RotaryAngles:
    """cos and sin of every fed position's rotation angles, [B, T, 1, H/2] each (1: broadcast over heads)."""

    cos: jax.Array
    sin: jax.Array


def rotary_angles(positions: jax.Array, inv_freq: np.ndarray) -> RotaryAngles:
    """The angles of positions [B, T] int32 for `inv_freq` [H // 2], computed once per step and shared by
    every layer of one rotary configuration.

    Why materialised once: XLA:CPU copies sin and cos into every layer's query and key fusion and evaluates
    them there per element, every head again. Default model, float32, 2-core CPU (2026-11-27): those
    fusions took 17.4 ms of a 128-token prompt step before, 8.9 ms after (`benchmarks/profile_decode.py
    --prefill 128`); whole steps, before / after, ABBA in one process (`/tmp` script, 12 rounds): 4 x 128
    prompt tokens 876 / 818 ms, 1 x 128 255 / 248 ms, a batch-64 decode step 191 / 183 ms."""
    angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B, T, H/2]

    def cos_sin(angles: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.cos(angles), jnp.sin(angles)

    if jax.default_backend() == "cpu":
        # A conditional's results are buffers XLA cannot fuse into their consumers (an optimization barrier
        # did not stop it). Both branches are the same computation, so the predicate changes nothing.
        cos, sin = jax.lax.cond(positions.reshape(-1)[0] < 0, cos_sin, cos_sin, angles)
    else:  # a conditional there may wait on the host for its predicate (GPU)
        cos, sin = cos_sin(angles)
    return RotaryAngles(cos=cos[:, :, None, :], sin=sin[:, :, None, :])


def apply_rotary(x: jax.Array, angles: RotaryAngles) -> jax.Array:
    """Rotate query or key heads x [B, T, heads, H] by their positions' angles.

    Uses the "rotate half" pairing (dimension i with i + H/2), the Hugging Face layout; GGUF
    weights are un-permuted at load time so that the same pairing serves both sources.
    """
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    cos, sin = angles.cos, angles.sin
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)
