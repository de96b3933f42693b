"""Token bitmask: host packing and the device unpack agree, including vocabularies not a multiple of 32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxserve.sampling.bitmask import allowed_bitmask, apply_bitmask, ban, bitmask_width, full_bitmask

jitted_apply = jax.jit(apply_bitmask)


def unpack(row: np.ndarray, vocab: int) -> np.ndarray:
    """[W] int32 -> [vocab] bool, bit i of word j = token 32 j + i."""
    bits = (row.view(np.uint32)[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    return bits.reshape(-1)[:vocab].astype(bool)


@pytest.mark.parametrize(
    ("vocab", "width"), [(1, 1), (31, 1), (32, 1), (33, 2), (49152, 1536), (50257, 1571)]
)
def test_width_is_ceil_of_vocab_over_32(vocab: int, width: int) -> None:
    assert bitmask_width(vocab) == width
    assert full_bitmask(vocab).shape == (width,)
    assert full_bitmask(vocab).dtype == np.int32


def test_full_bitmask_clears_padding_bits() -> None:
    row = full_bitmask(70)
    assert unpack(row, 70).all()
    bits = (row.view(np.uint32)[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    assert bits.reshape(-1)[70:].sum() == 0
    assert row[0] == -1 and row[1] == -1  # bit 31 is the sign bit of an int32 word


def test_allowed_and_ban_round_trip() -> None:
    vocab = 70
    allowed = allowed_bitmask(vocab, [0, 31, 32, 63, 69, 5])
    assert np.flatnonzero(unpack(allowed, vocab)).tolist() == [0, 5, 31, 32, 63, 69]
    banned = ban(allowed, [31, 69, 69])
    assert np.flatnonzero(unpack(banned, vocab)).tolist() == [0, 5, 32, 63]
    assert np.flatnonzero(unpack(allowed, vocab)).tolist() == [0, 5, 31, 32, 63, 69]  # ban copies


def test_out_of_range_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        allowed_bitmask(10, [10])
    with pytest.raises(ValueError):
        allowed_bitmask(10, [-1])


@pytest.mark.parametrize("vocab", [70, 96])
def test_apply_bitmask_matches_unpacked_rows(vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    logits = rng.normal(size=(4, vocab)).astype(np.float32)
    rows = [
        full_bitmask(vocab),
        allowed_bitmask(vocab, rng.choice(vocab, 10, replace=False)),
        ban(full_bitmask(vocab), [0, 31, vocab - 1]),
        rng.integers(-(2**31), 2**31, size=bitmask_width(vocab), dtype=np.int64).astype(np.int32)
        & full_bitmask(vocab),
    ]
    out = np.asarray(jitted_apply(logits, np.stack(rows)))
    for b, row in enumerate(rows):
        expected = np.where(unpack(row, vocab), logits[b], -np.inf)
        np.testing.assert_array_equal(out[b], expected)


def test_apply_bitmask_refuses_a_mismatched_width() -> None:
    with pytest.raises(ValueError):
        apply_bitmask(jnp.zeros((1, 64), jnp.float32), jnp.zeros((1, 3), jnp.int32))
