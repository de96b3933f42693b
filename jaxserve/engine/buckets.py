"""Padding buckets: the fixed set of shapes the jitted step is compiled for."""

from __future__ import annotations

import functools
from dataclasses import dataclass


def powers_of_two_upto(smallest: int, largest: int) -> tuple[int, ...]:
    """smallest, 2*smallest, ... capped by (and always including) largest."""
    out = []
    size = smallest
    while size < largest:
        out.append(size)
        size *= 2
    out.append(largest)
    return tuple(out)


def bucket_for(value: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket >= value."""
    for bucket in buckets:
        if bucket >= value:
            return bucket
    raise ValueError(f"{value} exceeds the largest bucket {buckets[-1]}")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


CPU_PREFILL_CHUNK_SIZES = (16, 32, 128)
"""Prompt chunk sizes on XLA:CPU. Default model, 2-core AVX-512 CPU, float32 (2026-11-27):

- 16: the short rest of a prompt after its 128-token chunks (the 13 tokens of a 141-token prompt) padded to
  32 took a step of four such chunks 246 ms, padded to 16 135 ms; one chunk from position 128, 16 / 32 / 128
  tokens: 59.8 / 85.7 / 244.8 ms (`/tmp` ABBA timing). 12 more step shapes to compile at 64 sequences.
- no 512: `benchmarks/prefill_chunks.py --prompts 1024 2048 --rounds 3` (11:20 UTC), 1024 / 2048 prompt
  tokens in chunks of 512 vs 128: 3553 / 10721 vs 3735 / 11189 ms, ~5% on long prompts only, against 9
  more step shapes. (An earlier run, 3547 / 11357 vs 3277 / 9583 ms, had a 512-token step copy its
  stacked kernels on every call, since fixed.)"""

ACCELERATOR_PREFILL_CHUNK_SIZES = (32, 128, 512)


def prefill_chunk_sizes_for(platform: str) -> tuple[int, ...]:
    """The prompt chunk sizes to compile on `platform` (a JAX device platform name)."""
    return CPU_PREFILL_CHUNK_SIZES if platform == "cpu" else ACCELERATOR_PREFILL_CHUNK_SIZES


UP_FRONT_DECODE_ROWS = 8
"""The widest decode batch a warm start loads before it serves. Wider ones, for loads of 16 or more streams,
load in the background: at `--max-num-seqs 64` on a 2-core CPU (2026-11-27) the batch-16/32/64 steps took
0.82 s to load and 1.08 s for their first calls, of a warm start's 14.3-15.4 s to a healthy `/health`."""


@dataclass(frozen=True)
class BucketConfig:
    """Shapes the runner compiles: (rows, tokens per row, block-table width in pages).

    Decode batches are padded to a power of two of rows, prefill chunks to a chunk size (and run up to
    max_prefill_rows together, in batches that need no padding row). Block tables are
    padded to a power-of-two number of pages (at least min_kv_len positions' worth) covering every
    position in the step, so short conversations do not pay attention over the whole context window.
    Chunks never exceed the per-step token budget.
    """

    max_num_seqs: int
    max_model_len: int
    page_size: int = 16
    prefill_chunk_sizes: tuple[int, ...] = ACCELERATOR_PREFILL_CHUNK_SIZES
    max_num_batched_tokens: int = 512
    min_kv_len: int = 256
    max_prefill_rows: int = 4
    """Prompt chunks of one chunk size run together, up to this many in one step (batches of powers of
    two). Why: a step's weight matmuls cost less per row with more rows. Default model on a 2-core AVX-512
    CPU (in-process ABBA, 12 rounds, 2026-11-27), four 128-token chunks one at a time / as two pairs / in
    one step: float32 1053.7 / 906.6 / 904.7 ms, W8A8 458.5 / 402.3 / 344.5 ms; four 32-token chunks,
    float32: 352.0 / 272.2 / 245.1 ms."""
    chunk_overhead_tokens: int = 20
    """What one more prompt chunk costs beyond its padded tokens, in tokens' worth of step time; chunk_for
    plans a prompt's chunks to minimise the sum. Measured for the default model in float32 on a 2-core
    AVX-512 CPU (2026-11-27, after the blocked attention kernel): one chunk from position 128 of 16 / 32 /
    128 tokens took 59.8 / 85.7 / 244.8 ms (`/tmp` ABBA timing), 1.65 ms per token plus ~33 ms, 20 tokens'
    worth, per chunk."""

    def __post_init__(self) -> None:
        if (
            self.page_size < 1
            or self.max_num_seqs < 1
            or self.max_model_len < 2
            or self.chunk_overhead_tokens < 0
            or self.max_prefill_rows < 1
        ):
            raise ValueError(f"invalid bucket configuration {self}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"the per-step token budget ({self.max_num_batched_tokens}) must be at least the number of "
                f"sequences that may decode together ({self.max_num_seqs})"
            )

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return powers_of_two_upto(1, self.max_num_seqs)

    def prefill_batch_sizes(self, chunk: int) -> tuple[int, ...]:
        """Row counts a step of `chunk`-token prompt chunks is compiled for: up to max_prefill_rows, and no
        more than one step's token budget can hold (each chunk padded to `chunk` holds more tokens than the
        next smaller chunk size)."""
        smaller = [size for size in self.chunk_sizes if size < chunk]
        fit = self.max_num_batched_tokens // (max(smaller, default=0) + 1)
        return powers_of_two_upto(1, max(1, min(self.max_prefill_rows, self.max_num_seqs, fit)))

    def prefill_batches(self, count: int, chunk: int) -> list[int]:
        """How `count` prompt chunks padded to `chunk` tokens split into steps: each step takes the largest
        batch size the chunks left fill, so no step carries a padding row (7 -> 4, 2, 1)."""
        batches = []
        while count > 0:
            rows = max(size for size in self.prefill_batch_sizes(chunk) if size <= count)
            batches.append(rows)
            count -= rows
        return batches

    @property
    def max_pages_per_seq(self) -> int:
        return cdiv(self.max_model_len, self.page_size)

    @property
    def page_counts(self) -> tuple[int, ...]:
        """Block-table widths: powers of two of pages from min_kv_len's worth up to a whole context."""
        smallest = min(cdiv(self.min_kv_len, self.page_size), self.max_pages_per_seq)
        return powers_of_two_upto(smallest, self.max_pages_per_seq)

    def pages_for(self, num_positions: int) -> int:
        """The block-table width bucket covering positions 0..num_positions-1."""
        return bucket_for(cdiv(num_positions, self.page_size), self.page_counts)

    @property
    def chunk_sizes(self) -> tuple[int, ...]:
        cap = min(self.max_model_len, self.max_num_batched_tokens)
        return tuple(c for c in self.prefill_chunk_sizes if c <= cap) or (cap,)

    def chunk_for(self, remaining: int, budget: int | None = None) -> int:
        """How many of `remaining` prompt tokens one chunk feeds: the first chunk of the cheapest way to
        feed them all (see `chunk_overhead_tokens`), cut to the step's remaining token `budget` if given.

        A prompt the largest chunk size cannot take whole goes in chunks of that size first; the rest is
        split so that little of it is padding: 141 tokens go as 128 + 13 (padded to 32), not as one chunk
        padded to 512, but 109 go as one chunk of 128, not as four of 32."""
        largest = self.chunk_sizes[-1]
        first = largest if remaining >= largest else self._cheapest_first_chunks[remaining]  # <= remaining
        return first if budget is None else min(first, budget)

    @functools.cached_property
    def _cheapest_first_chunks(self) -> tuple[int, ...]:
        """Entry r (below the largest chunk size): the tokens the first chunk of the cheapest plan feeding r
        prompt tokens takes, where a chunk costs its padded size plus `chunk_overhead_tokens`."""
        cost = [0]
        first = [0]
        for remaining in range(1, self.chunk_sizes[-1]):
            # Largest first, and only a strictly cheaper plan replaces it: ties go to fewer chunks.
            options = [
                (size + self.chunk_overhead_tokens + cost[max(0, remaining - size)], size)
                for size in reversed(self.chunk_sizes)
            ]
            best_cost, best_size = min(options, key=lambda option: option[0])
            cost.append(best_cost)
            first.append(min(remaining, best_size))
        return tuple(first)

    def step_shape(self, rows: int, tokens: int, num_positions: int) -> tuple[int, int, int]:
        """The compiled (batch, tokens, pages) shape for `rows` rows of up to `tokens` tokens each,
        reaching positions below num_positions. A chunk's block table spans at least the chunk."""
        if tokens == 1:
            return bucket_for(rows, self.batch_sizes), 1, self.pages_for(num_positions)
        chunk = bucket_for(tokens, self.chunk_sizes)
        batch = bucket_for(rows, self.prefill_batch_sizes(chunk))
        return batch, chunk, self.pages_for(max(num_positions, chunk))

    def loaded_up_front(self, shape: tuple[int, int, int]) -> bool:
        """Whether a warm start loads (and calls once) step `shape` before it serves: decode batches of up
        to UP_FRONT_DECODE_ROWS rows and one-row prompt chunks, over the narrowest block table, what a few
        short conversations at once need. The rest load in the background while the server runs."""
        batch, tokens, pages = shape
        if pages != self.pages_for(tokens):
            return False
        return batch <= UP_FRONT_DECODE_ROWS if tokens == 1 else batch == 1

    def all_step_shapes(self) -> list[tuple[int, int, int]]:
        """Every (batch, tokens per row, pages per row) the runner may run: what warm-up compiles."""
        shapes = [(b, 1, p) for b in self.batch_sizes for p in self.page_counts]
        shapes += [
            (b, c, p)
            for c in self.chunk_sizes
            for b in self.prefill_batch_sizes(c)
            for p in self.page_counts
            if p * self.page_size >= c
        ]
        return shapes
