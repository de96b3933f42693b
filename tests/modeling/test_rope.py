"""Rotary embeddings: the "rotate half" rotation, and its angles computed once per step for every layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxserve.modeling.config import RopeConfig
from jaxserve.modeling.rope import apply_rotary, inverse_frequencies, rotary_angles


def test_each_pair_of_dimensions_turns_by_its_position_times_its_frequency() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3, 8), dtype=np.float32)  # [B, T, heads, H]
    positions = np.array([[0, 1, 2, 3, 4], [7, 100, 1000, 4095, 1 << 20]], np.int32)
    inv_freq = inverse_frequencies(RopeConfig(theta=10000.0), 8)
    rotated = np.asarray(apply_rotary(jnp.asarray(x), rotary_angles(jnp.asarray(positions), inv_freq)))

    angles = positions[..., None, None].astype(np.float64) * inv_freq  # [B, T, 1, H/2]
    first, second = x[..., :4], x[..., 4:]  # dimension i pairs with i + H/2
    expected = np.concatenate(
        [first * np.cos(angles) - second * np.sin(angles), second * np.cos(angles) + first * np.sin(angles)],
        axis=-1,
    )
    np.testing.assert_allclose(rotated, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(rotated[0, 0], x[0, 0])  # position 0 turns nothing


def test_the_angles_are_computed_once_however_many_layers_rotate_by_them() -> None:
    """XLA:CPU copied sin and cos into each layer's fusion and evaluated them per element and head there
    (~18 ms of a 128-token prompt step of the default model); computed once, every layer reads them."""
    inv_freq = inverse_frequencies(RopeConfig(), 64)

    def layers(xs: list[jax.Array], positions: jax.Array) -> list[jax.Array]:
        angles = rotary_angles(positions, inv_freq)
        return [apply_rotary(x, angles) for x in xs]

    xs = [jnp.full((1, 16, 9, 64), float(i)) for i in range(12)]
    compiled = jax.jit(layers).lower(xs, jnp.arange(16, dtype=jnp.int32)[None]).compile().as_text()
    # Two at most: on CPU the angles come out of a conditional whose two branches are the same computation.
    assert compiled.count(" cosine(") <= 2
    assert compiled.count(" sine(") <= 2
