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


@dataclass(frozen=True)
class BucketConfig:
    """Shapes the runner compiles.

    Decode batches are padded to a power of two of rows (rows are cache slots 0..B-1, so the slot
    allocator hands out the lowest free slot first). Prefill chunks are padded to a chunk size.
    Attention reads a power-of-two prefix of the cache (at least 256 positions) covering every
    position in the step, so short conversations do not pay for the whole context window.
    """

    max_num_seqs: int
    max_model_len: int
    prefill_chunk_sizes: tuple[int, ...] = (32, 128, 512)
    min_kv_len: int = 256

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return powers_of_two_upto(1, self.max_num_seqs)

    @property
    def kv_lens(self) -> tuple[int, ...]:
        return powers_of_two_upto(min(self.min_kv_len, self.max_model_len), self.max_model_len)

    @property
    def chunk_sizes(self) -> tuple[int, ...]:
        return tuple(c for c in self.prefill_chunk_sizes if c <= self.max_model_len) or (self.max_model_len,)

    def chunk_for(self, remaining: int) -> int:
        """The chunk size to process `remaining` prompt tokens: the smallest that holds them all, or the largest."""
        for size in self.chunk_sizes:
            if size >= remaining:
                return size
        return self.chunk_sizes[-1]

    def all_step_shapes(self) -> list[tuple[int, int, int]]:
        """Every (batch, tokens per row, kv_len) the runner may run: what warm-up compiles."""
        shapes = [(b, 1, kv) for b in self.batch_sizes for kv in self.kv_lens]
        shapes += [(1, c, kv) for c in self.chunk_sizes for kv in self.kv_lens if kv >= c]
        return shapes
