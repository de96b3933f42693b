"""Sizing the KV page pool: explicit sizes, the minimum of one full sequence, and a stable rounded count."""

from __future__ import annotations

import pytest

from jaxserve.engine.kv_memory import num_kv_pages, parse_size, stable_page_count


def test_sizes_parse_in_decimal_and_binary_units() -> None:
    assert parse_size("4GiB") == 4 * 2**30
    assert parse_size("1.5G") == 1_500_000_000
    assert parse_size("800000") == 800_000
    with pytest.raises(ValueError, match="not a memory size"):
        parse_size("lots")


def test_a_budget_below_one_sequence_is_refused() -> None:
    assert num_kv_pages(10 * 100, 100, at_least=4, at_most=8) == 8
    with pytest.raises(ValueError, match="fewer than the 4"):
        num_kv_pages(300, 100, at_least=4)


def test_pool_sizes_from_drifting_free_memory_round_to_the_same_count() -> None:
    # Free memory a few percent apart between two starts gives the same pool (and so the same programs).
    assert stable_page_count(8134, at_least=128) == stable_page_count(7800, at_least=128) == 7680
    assert stable_page_count(1000, at_least=128) == 960  # 0b1111101000 -> its top four bits
    for pages in range(129, 20000, 37):
        rounded = stable_page_count(pages, at_least=128)
        assert pages * 8 / 9 < rounded <= pages


def test_rounding_never_goes_below_one_full_sequence() -> None:
    assert stable_page_count(130, at_least=129) == 129
    assert stable_page_count(100, at_least=128) == 100  # below the minimum already: num_kv_pages refuses it
