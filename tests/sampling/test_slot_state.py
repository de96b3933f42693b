"""The per-slot sampler state: rows gathered by slot, and the output counts a step adds to."""

from __future__ import annotations

import jax
import numpy as np

from jaxserve.sampling.slot_state import SlotSamplingState, count_output_tokens, slot_rows


def test_slot_rows_gather_each_rows_slot_and_zeros_for_padding() -> None:
    table = np.arange(12, dtype=np.int32).reshape(3, 4)
    rows = np.asarray(jax.jit(slot_rows)(table, np.asarray([2, 0, 3], np.int32)))  # 3: a padding row
    np.testing.assert_array_equal(rows, [table[2], table[0], [0, 0, 0, 0]])


def test_counting_adds_each_counted_rows_token_to_its_slot_only() -> None:
    state = SlotSamplingState.allocate(4, 8)
    counts = np.zeros((4, 8), np.int32)
    counts[1, 2] = 4
    state = SlotSamplingState(state.bias, state.prompt_mask, counts)
    slots = np.asarray([1, 3, 0, 4], np.int32)  # slot 4 is out of range: a padding row
    tokens = np.asarray([2, 5, 7, 1], np.int32)
    counted = np.asarray([True, True, False, True])  # row 2: a mid-prompt chunk
    out = np.asarray(jax.jit(count_output_tokens)(state, slots, tokens, counted).output_counts)
    expected = counts.copy()
    expected[1, 2] = 5
    expected[3, 5] = 1
    np.testing.assert_array_equal(out, expected)
