"""Feature-major projections: kernels stored [out, in] give x @ Wᵀ, whichever way the product is formed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.modeling.decoder import FEATURE_MAJOR_MAX_ROWS, feature_major_matmul


@pytest.mark.parametrize("lead", [(1, 1), (4, 1), (2, 8), (1, FEATURE_MAJOR_MAX_ROWS), (3, 50)])
@pytest.mark.parametrize("out_dtype", [None, jnp.float32])
def test_feature_major_matmul_is_x_times_the_transposed_kernel(
    lead: tuple[int, int], out_dtype: jnp.dtype | None
) -> None:
    # (1, 1) is the one-row product (no copies); (1, FEATURE_MAJOR_MAX_ROWS) takes kernel @ xᵀ at the
    # row limit; (3, 50) = 150 rows contracts x with the kernel directly.
    rng = np.random.default_rng(sum(lead))
    x = rng.standard_normal((*lead, 48), dtype=np.float32)
    kernel = rng.standard_normal((80, 48), dtype=np.float32)  # [out, in]
    out = jax.jit(feature_major_matmul, static_argnums=2)(x, kernel, out_dtype)
    assert out.shape == (*lead, 80)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), x @ kernel.T, rtol=1e-5, atol=1e-5)


def test_feature_major_matmul_keeps_a_bfloat16_input_in_bfloat16_unless_asked() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 32), dtype=np.float32), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((16, 32), dtype=np.float32), jnp.bfloat16)
    assert feature_major_matmul(x, kernel).dtype == jnp.bfloat16
    widened = feature_major_matmul(x, kernel, jnp.float32)
    assert widened.dtype == jnp.float32
    expected = np.asarray(x, np.float32) @ np.asarray(kernel, np.float32).T
    np.testing.assert_allclose(np.asarray(widened), expected, rtol=1e-2, atol=1e-2)
