"""The KV-cache page allocator and prefix cache.

Pages are reference-counted: a page is shared by every sequence whose prompt starts with the same
full blocks of tokens. A page whose count drops to zero goes on the free list but keeps its contents
and its hash: until it is handed out again, a later request with the same prefix can take it back
(a prefix-cache hit). The free list is least-recently-freed first, so the oldest cached blocks are
evicted first; a sequence frees its pages last-block-first, so a prefix's tail is evicted before its head.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

FREED_PAGE = -1
"""A block-table entry whose page the sequence gave back (sliding-window attention: every position in it
is outside the window of every query the sequence will still make). The runner reads it as page 0; the
attention mask hides whatever that page holds from this sequence."""


def chain_block_hashes(
    token_ids: Sequence[int], page_size: int, salt: str | None, known: list[bytes]
) -> list[bytes]:
    """Extend `known` with the hashes of the further full blocks of token_ids; return the extended list.

    Block i's hash covers its tokens and, through its parent's hash, every token before it, so equal
    hashes mean equal prefixes. The salt (vLLM's cache_salt) enters the first block only: requests
    with different salts never share a page.
    """
    hashes = list(known)
    parent = hashes[-1] if hashes else hashlib.sha256((salt or "").encode()).digest()
    for i in range(len(hashes), len(token_ids) // page_size):
        block = np.asarray(token_ids[i * page_size : (i + 1) * page_size], np.int64).tobytes()
        parent = hashlib.sha256(parent + block).digest()
        hashes.append(parent)
    return hashes


class BlockPool:
    """Hands out pages of the paged KV cache and remembers which hold which full blocks of tokens."""

    def __init__(self, num_pages: int, *, enable_prefix_caching: bool = True) -> None:
        self.num_pages = num_pages
        self.enable_prefix_caching = enable_prefix_caching
        self._refs = [0] * num_pages
        self._free: OrderedDict[int, None] = OrderedDict((page, None) for page in range(num_pages))
        self._hash_of: dict[int, bytes] = {}
        self._page_of: dict[bytes, int] = {}

    @property
    def num_free(self) -> int:
        """Pages that can be handed out now (including cached ones nobody uses)."""
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of pages in use by running sequences."""
        return 1.0 - len(self._free) / self.num_pages

    def cached_prefix(self, hashes: Iterable[bytes]) -> list[int]:
        """The pages holding the longest run of the given block hashes, from the first."""
        pages: list[int] = []
        if not self.enable_prefix_caching:
            return pages
        for block_hash in hashes:
            page = self._page_of.get(block_hash)
            if page is None:
                break
            pages.append(page)
        return pages

    def cached_page(self, block_hash: bytes) -> int | None:
        """The page holding this full block, if the prefix cache has it."""
        return self._page_of.get(block_hash) if self.enable_prefix_caching else None

    def num_idle(self, pages: Iterable[int]) -> int:
        """How many of `pages` are on the free list (taking them shrinks num_free); FREED_PAGE entries
        are skipped here, in share() and in release()."""
        return sum(1 for page in pages if page != FREED_PAGE and self._refs[page] == 0)

    def share(self, pages: Iterable[int]) -> None:
        """Take a reference on cached pages (a prefix-cache hit)."""
        for page in pages:
            if page == FREED_PAGE:
                continue
            if self._refs[page] == 0:
                del self._free[page]
            self._refs[page] += 1

    def allocate(self, count: int) -> list[int]:
        """`count` fresh pages; a cached page handed out here loses its cache entry."""
        if count > len(self._free):
            raise RuntimeError(f"asked for {count} KV pages with {len(self._free)} free")
        pages = []
        for _ in range(count):
            page, _ = self._free.popitem(last=False)
            block_hash = self._hash_of.pop(page, None)
            if block_hash is not None:
                del self._page_of[block_hash]
            self._refs[page] = 1
            pages.append(page)
        return pages

    def release(self, pages: Sequence[int]) -> None:
        """Drop one reference on each page; unreferenced pages become free (tail first)."""
        for page in reversed(pages):
            if page == FREED_PAGE:
                continue
            self._refs[page] -= 1
            if self._refs[page] == 0:
                self._free[page] = None

    def register(self, page: int, block_hash: bytes) -> None:
        """Record that `page` now holds the full block `block_hash`. If another page already holds it
        (two sequences computed the same block at once), the first stays the cached copy."""
        if not self.enable_prefix_caching or block_hash in self._page_of or page in self._hash_of:
            return
        self._page_of[block_hash] = page
        self._hash_of[page] = block_hash

    def is_cached(self, block_hash: bytes) -> bool:
        return block_hash in self._page_of
