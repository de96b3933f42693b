"""Feature-major projections: kernels stored [out, in] give x @ Wᵀ, whichever way the product is formed
(the native kernel for a few float32 rows, XLA's dots otherwise)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.modeling import native_library, native_matvec
from jaxserve.modeling.decoder import (
    FEATURE_MAJOR_MAX_ROWS,
    MLP_THROUGH_MAX_ROWS,
    feature_major_matmul,
    feature_major_mlp,
)


@pytest.fixture(params=["native", "xla"])
def dot_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each case with the native kernel where it takes the rows (if it builds here), and with XLA's dots
    only."""
    if request.param == "native" and not native_library.available():
        pytest.skip("the native kernels could not be built (no C++ compiler?)")
    if request.param == "xla":
        monkeypatch.setattr(native_matvec, "supports", lambda *_: False)
    return str(request.param)


@pytest.mark.parametrize("lead", [(1, 1), (4, 1), (2, 8), (1, FEATURE_MAJOR_MAX_ROWS), (3, 50)])
@pytest.mark.parametrize("out_dtype", [None, jnp.float32])
def test_feature_major_matmul_is_x_times_the_transposed_kernel(
    lead: tuple[int, int], out_dtype: jnp.dtype | None, dot_path: str
) -> None:
    # (1, 1) is the one-row product (no copies) and (4, 1) native's widest; (1, FEATURE_MAJOR_MAX_ROWS)
    # takes kernel @ xᵀ at the row limit; (3, 50) = 150 rows contracts x with the kernel directly.
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


@pytest.mark.parametrize("lead", [(1, 1), (2, 2), (2, 8), (1, FEATURE_MAJOR_MAX_ROWS), (3, 50)])
def test_a_stacked_kernel_gives_each_part_its_own_product(lead: tuple[int, int], dot_path: str) -> None:
    rng = np.random.default_rng(sum(lead))
    x = rng.standard_normal((*lead, 48), dtype=np.float32)
    kernel = rng.standard_normal((2, 80, 48), dtype=np.float32)  # [parts, out, in]
    out = jax.jit(feature_major_matmul)(x, kernel)
    assert out.shape == (*lead, 2, 80)
    for part in range(2):
        np.testing.assert_allclose(np.asarray(out[..., part, :]), x @ kernel[part].T, rtol=1e-5, atol=1e-5)


# One row, the hidden activations kept [F, rows] (up to MLP_THROUGH_MAX_ROWS), and x @ kernelᵀ above it.
@pytest.mark.parametrize("lead", [(1, 1), (2, 2), (2, 8), (1, MLP_THROUGH_MAX_ROWS), (3, 50)])
def test_feature_major_mlp_is_the_gated_mlp(lead: tuple[int, int], dot_path: str) -> None:
    rng = np.random.default_rng(sum(lead))
    x = rng.standard_normal((*lead, 48), dtype=np.float32)
    gate_up = rng.standard_normal((2, 96, 48), dtype=np.float32) * 0.2  # [gate; up], each [F, D]
    down = rng.standard_normal((48, 96), dtype=np.float32) * 0.2  # [D, F]
    out = jax.jit(feature_major_mlp, static_argnums=3)(x, gate_up, down, jax.nn.silu)
    gate, up = x @ gate_up[0].T, x @ gate_up[1].T
    expected = (gate / (1 + np.exp(-gate)) * up) @ down.T
    assert out.shape == (*lead, 48)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not native_library.available(), reason="the native kernels could not be built")
@pytest.mark.parametrize("rows", [1, native_matvec.MAX_ROWS, native_matvec.MAX_ROWS + 1])
def test_the_native_kernel_takes_up_to_its_row_limit(rows: int) -> None:
    x, kernel = jnp.ones((rows, 48), jnp.float32), jnp.ones((2, 80, 48), jnp.float32)
    program = str(jax.make_jaxpr(feature_major_matmul)(x, kernel))
    assert (native_library.MATVEC_TARGET in program) == (rows <= native_matvec.MAX_ROWS)
    bfloat16 = str(jax.make_jaxpr(feature_major_matmul)(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)))
    assert native_library.MATVEC_TARGET not in bfloat16
