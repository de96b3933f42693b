"""Padding buckets: the fixed set of shapes the jitted step is compiled for."""

from __future__ import annotations

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


@dataclass(frozen=True)
class BucketConfig:
    """Shapes the runner compiles: (rows, tokens per row, block-table width in pages).

    Decode batches are padded to a power of two of rows, prefill chunks to a chunk size. Block tables are
    padded to a power-of-two number of pages (at least min_kv_len positions' worth) covering every
    position in the step, so short conversations do not pay attention over the whole context window.
    Chunks never exceed the per-step token budget.
    """

    max_num_seqs: int
    max_model_len: int
    page_size: int = 16
    prefill_chunk_sizes: tuple[int, ...] = (32, 128, 512)
    max_num_batched_tokens: int = 512
    min_kv_len: int = 256

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.max_num_seqs < 1 or self.max_model_len < 2:
            raise ValueError(f"invalid bucket configuration {self}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"the per-step token budget ({self.max_num_batched_tokens}) must be at least the number of "
                f"sequences that may decode together ({self.max_num_seqs})"
            )

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return powers_of_two_upto(1, self.max_num_seqs)

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
        """How many of `remaining` prompt tokens one chunk feeds: as many as the largest chunk size and
        the step's remaining token `budget` (if given) allow."""
        largest = self.chunk_sizes[-1]
        return min(remaining, largest if budget is None else min(budget, largest))

    def step_shape(self, rows: int, tokens: int, num_positions: int) -> tuple[int, int, int]:
        """The compiled (batch, tokens, pages) shape for `rows` rows of up to `tokens` tokens each,
        reaching positions below num_positions. A chunk's block table spans at least the chunk."""
        if tokens == 1:
            return bucket_for(rows, self.batch_sizes), 1, self.pages_for(num_positions)
        chunk = bucket_for(tokens, self.chunk_sizes)
        return 1, chunk, self.pages_for(max(num_positions, chunk))

    def all_step_shapes(self) -> list[tuple[int, int, int]]:
        """Every (batch, tokens per row, pages per row) the runner may run: what warm-up compiles."""
        shapes = [(b, 1, p) for b in self.batch_sizes for p in self.page_counts]
        shapes += [(1, c, p) for c in self.chunk_sizes for p in self.page_counts if p * self.page_size >= c]
        return shapes
