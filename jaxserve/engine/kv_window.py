"""Which KV-cache pages a sliding-window sequence can still read, and which it can give back.

The attention mask (jaxserve.modeling.attention) lets a query at position p see key position s when
p - W < s <= p. A sequence's next fed token is at position `num_computed` (a decode feeds its last
token there; a prefill chunk starts there), and every later query sits further right, so key positions
below `num_computed - W + 1` are never read again: a page whose every position is below that bound can
go back to the pool. A prefill chunk's first token at p0 still needs keys from p0 - W + 1, which is the
same bound taken before the chunk runs.

One block table serves every layer, so pages can be freed only when EVERY layer attends through the same
window. A model that mixes windowed and full-attention layers (Gemma 3's 5 local : 1 global) needs its
whole history for the global layers and keeps every page.
"""

from __future__ import annotations

from jaxserve.engine.buckets import cdiv
from jaxserve.modeling.config import ModelConfig


def uniform_window(cfg: ModelConfig) -> int | None:
    """The window every layer attends through, or None when some layer sees the whole history.

    A config without per-layer types (Mistral) slides on every layer when it has a window; one that mixes
    sliding and full layers (Gemma 3) keeps all of its pages, since one block table serves every layer.
    """
    windows = {cfg.layer_window(layer) for layer in range(cfg.num_layers)}
    return windows.pop() if len(windows) == 1 else None


def first_needed_position(next_position: int, window: int) -> int:
    """The oldest key position a query at `next_position` (or any later one) can see."""
    return max(0, next_position - window + 1)


def first_needed_block(next_position: int, window: int, page_size: int) -> int:
    """Blocks below this index hold only positions no query at or after `next_position` can see."""
    return first_needed_position(next_position, window) // page_size


def window_blocks(window: int, page_size: int) -> int:
    """Full blocks a prefix-cache hit ending on a block boundary needs: the W - 1 keys before it."""
    return cdiv(window - 1, page_size)


def max_pages_held(window: int, page_size: int, tokens_fed: int) -> int:
    """The most pages a windowed sequence holds during a step that feeds `tokens_fed` tokens.

    It holds pages covering positions [p0 - W + 1, p0 + tokens_fed), an interval of W + tokens_fed - 1
    positions; an interval of L positions touches at most ceil((L - 1) / page_size) + 1 pages.
    """
    return cdiv(window + tokens_fed - 2, page_size) + 1


def windowed_cache_hit(cached: list[int | None], window: int, page_size: int) -> int:
    """How many leading blocks a windowed sequence can skip, given which of its blocks are cached.

    `cached[i]` is the page holding the sequence's block i, or None. Skipping k blocks needs only the
    blocks a query at position k * page_size can see (window_blocks of them before block k, fewer near
    the start), not the whole prefix: the block hashes chain over every earlier token, so a cached
    block's keys are the ones this prefix computes. Scans right to left and stops at the longest hit.
    """
    needed = max(1, window_blocks(window, page_size))
    run = 0  # cached blocks in a row from block i rightwards
    for i in range(len(cached) - 1, -1, -1):
        run = run + 1 if cached[i] is not None else 0
        if run >= needed:
            return i + run  # blocks i .. i + run - 1 are cached: the rightmost run long enough
    return run  # no run is long enough; one that starts at block 0 needs no blocks before it
