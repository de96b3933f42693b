"""The native product of one to four rows with a feature-major kernel, against numpy, and when it runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.modeling import native_library, native_matvec

pytestmark = pytest.mark.skipif(
    not native_library.available(), reason="the native kernels could not be built (no C++ compiler?)"
)


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("outs,width", [(1, 7), (3, 5), (4, 576), (33, 64), (130, 96), (1000, 17)])
def test_the_product_matches_numpy(rows: int, outs: int, width: int) -> None:
    # Output counts below, at and off the kernel's 4-row groups and 32-feature blocks.
    rng = np.random.default_rng(rows * 1000 + outs)
    x = rng.standard_normal((rows, width)).astype(np.float32)
    kernel = rng.standard_normal((outs, width)).astype(np.float32)
    got = np.asarray(jax.jit(native_matvec.product)(x, kernel))
    assert got.shape == (rows, outs) and got.dtype == np.float32
    np.testing.assert_allclose(got, x.astype(np.float64) @ kernel.T.astype(np.float64), rtol=1e-4, atol=1e-4)


def test_which_calls_it_takes() -> None:
    x, kernel = jnp.ones((4, 8), jnp.float32), jnp.ones((16, 8), jnp.float32)
    assert native_matvec.supports(x, kernel)
    assert not native_matvec.supports(jnp.ones((5, 8), jnp.float32), kernel)  # more rows than MAX_ROWS
    assert not native_matvec.supports(x.astype(jnp.bfloat16), kernel)
    assert not native_matvec.supports(x, kernel.astype(jnp.bfloat16))
