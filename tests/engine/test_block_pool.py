"""The page allocator and prefix cache, host-side only."""

from __future__ import annotations

import pytest

from jaxserve.engine.block_pool import BlockPool, chain_block_hashes


def test_chained_hashes_cover_the_whole_prefix_and_only_full_blocks() -> None:
    a = chain_block_hashes(list(range(10)), 4, None, [])
    assert len(a) == 2  # 10 tokens = two full blocks of 4 and a partial one
    b = chain_block_hashes([99, *range(1, 10)], 4, None, [])
    assert a[0] != b[0] and a[1] != b[1]  # a different first token changes every later hash
    assert chain_block_hashes(list(range(12)), 4, None, a) == chain_block_hashes(list(range(12)), 4, None, [])


def test_a_salt_changes_every_hash() -> None:
    tokens = list(range(8))
    plain = chain_block_hashes(tokens, 4, None, [])
    salted = chain_block_hashes(tokens, 4, "tenant", [])
    assert not set(plain) & set(salted)
    assert salted == chain_block_hashes(tokens, 4, "tenant", [])


def test_allocate_and_release_return_pages_to_the_pool() -> None:
    pool = BlockPool(4)
    pages = pool.allocate(3)
    assert len(set(pages)) == 3 and pool.num_free == 1 and pool.usage == 0.75
    pool.release(pages)
    assert pool.num_free == 4 and pool.usage == 0.0
    with pytest.raises(RuntimeError, match="asked for 5"):
        pool.allocate(5)


def test_released_blocks_stay_cached_until_their_page_is_reused() -> None:
    pool = BlockPool(3)
    hashes = chain_block_hashes(list(range(8)), 4, None, [])
    pages = pool.allocate(2)
    for page, block_hash in zip(pages, hashes, strict=True):
        pool.register(page, block_hash)
    pool.release(pages)
    assert pool.cached_prefix(hashes) == pages  # still there after release
    assert pool.num_idle(pages) == 2
    pool.share(pages)  # a hit takes them off the free list
    assert pool.num_free == 1
    pool.release(pages)
    # Released tail first: the never-used page, then the second block, then the first get reused.
    pool.allocate(2)
    assert pool.cached_prefix(hashes) == [pages[0]]
    pool.allocate(1)
    assert pool.cached_prefix(hashes) == []


def test_shared_pages_are_freed_only_by_their_last_user() -> None:
    pool = BlockPool(2)
    (page,) = pool.allocate(1)
    pool.register(page, b"block")
    pool.share([page])
    pool.release([page])
    assert pool.num_free == 1  # the other user still holds it
    pool.release([page])
    assert pool.num_free == 2


def test_the_first_copy_of_a_block_stays_the_cached_one() -> None:
    pool = BlockPool(2)
    first, second = pool.allocate(2)
    pool.register(first, b"same")
    pool.register(second, b"same")
    assert pool.cached_prefix([b"same"]) == [first]


def test_without_prefix_caching_nothing_is_found() -> None:
    pool = BlockPool(2, enable_prefix_caching=False)
    (page,) = pool.allocate(1)
    pool.register(page, b"block")
    assert pool.cached_prefix([b"block"]) == []
