"""The scheduler: which sequences run in the next step, with how many tokens each, on which pages.

Each step has a token budget (--max-num-batched-tokens) and at most max_num_seqs running sequences.
Running sequences are served first, best first (FCFS: earliest arrival; priority policy: lowest
priority value, then earliest arrival): every decoding sequence gets its one token, then sequences
part-way through their prompt get the next chunk. What budget is left admits waiting sequences, each
with its first chunk, after taking any full prompt blocks the prefix cache already holds.

When the page pool runs dry, the worst running sequence (newest, or lowest priority) is preempted:
its pages and slot are freed and it goes back to the waiting queue to be recomputed later, its output
so far kept. Nothing fails for want of pages.

With a sliding window shared by every layer (`sliding_window`), a running sequence gives back each page
once every position in it has left the window of every query it will still make (jaxserve.engine.kv_window);
its block-table entry becomes FREED_PAGE. Admission and reservation then count only the pages it holds,
and a prefix-cache hit needs only the cached blocks inside the window before the first computed token.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from jaxserve.engine.block_pool import FREED_PAGE, BlockPool, chain_block_hashes
from jaxserve.engine.buckets import BucketConfig, cdiv
from jaxserve.engine.kv_window import first_needed_block, max_pages_held, windowed_cache_hit
from jaxserve.engine.sequence import Sequence, SequenceStatus

POLICIES = ("fcfs", "priority")


@dataclass(frozen=True)
class PrefillChunk:
    seq: Sequence
    start: int  # position of the first token fed
    num_tokens: int

    @property
    def ends_prefill(self) -> bool:
        return self.start + self.num_tokens == self.seq.prefill_target


@dataclass
class StepPlan:
    """What one step runs. `admitted` sequences took a slot this step (their sampler state needs setting)."""

    admitted: list[Sequence] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.prefills or self.decodes)


class Scheduler:
    """Owns the waiting queue, the running set, the sampler slots and the page pool."""

    def __init__(
        self, buckets: BucketConfig, pool: BlockPool, policy: str = "fcfs", sliding_window: int | None = None
    ) -> None:
        """`sliding_window`: the window EVERY layer attends through (None: keep every page until the
        sequence ends, as a full-attention or mixed-window model must)."""
        if policy not in POLICIES:
            raise ValueError(f"unknown scheduling policy {policy!r}; expected one of {POLICIES}")
        if sliding_window is not None and sliding_window < 1:
            raise ValueError(f"sliding_window must be positive, got {sliding_window}")
        pages_per_seq = buckets.max_pages_per_seq
        if sliding_window is not None:
            largest_step = max(buckets.chunk_sizes[-1], 1)
            pages_per_seq = min(
                pages_per_seq, max_pages_held(sliding_window, buckets.page_size, largest_step)
            )
        if pool.num_pages < pages_per_seq:
            raise ValueError(
                f"the KV cache has {pool.num_pages} pages but one {buckets.max_model_len}-token sequence "
                f"needs {pages_per_seq}"
            )
        self.sliding_window = sliding_window
        self.buckets = buckets
        self.pool = pool
        self.policy = policy
        self.page_size = buckets.page_size
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self._free_slots = list(range(buckets.max_num_seqs))
        heapq.heapify(self._free_slots)
        # Hash of a prompt block some running sequence is computing now -> that sequence's request id.
        # A waiting request whose next uncached block is among them waits for it instead of repeating it.
        self._pending: dict[bytes, str] = {}
        self.num_preemptions = 0  # since start, for metrics and tests

    # ---------------------------------------------------------------- state

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_free_slots(self) -> int:
        return len(self._free_slots)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def rank(self, seq: Sequence) -> tuple[int, int]:
        """Sort key: smaller runs first and is preempted last."""
        return (seq.priority if self.policy == "priority" else 0, seq.arrival)

    # ---------------------------------------------------------------- queue changes

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """The sequence is done (finished, aborted or failed): give back its slot and pages now."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        self._free_resources(seq)
        seq.status = SequenceStatus.FINISHED

    def find(self, request_id: str) -> Sequence | None:
        for seq in self.running + self.waiting:
            if seq.request_id == request_id:
                return seq
        return None

    # ---------------------------------------------------------------- the step plan

    def schedule(self) -> StepPlan:
        plan = StepPlan()
        budget = self.buckets.max_num_batched_tokens
        by_rank = sorted(self.running, key=self.rank)  # preempted ones drop out of self.running as we go
        for seq in by_rank:
            if seq.status is not SequenceStatus.DECODING or seq not in self.running:
                continue
            if self._reserve(seq, seq.num_computed + 1, plan):
                plan.decodes.append(seq)
                budget -= 1
        for seq in by_rank:
            if budget <= 0:
                break
            if seq.status is not SequenceStatus.PREFILLING or seq not in self.running:
                continue
            count = self.buckets.chunk_for(seq.prefill_target - seq.num_computed, budget)
            if self._reserve(seq, seq.num_computed + count, plan):
                plan.prefills.append(PrefillChunk(seq, seq.num_computed, count))
                budget -= count
        for seq in sorted(self.waiting, key=self.rank):
            if budget <= 0:
                break
            cached = self._cached_prefix(seq)
            if self._held_back(seq, len(cached)):
                continue  # its next block is being computed by another request: admit it after that
            chunk = self._admit(seq, cached, budget, plan)
            if chunk is None:
                break  # no room: later arrivals must not overtake it
            plan.prefills.append(chunk)
            budget -= chunk.num_tokens
        return plan

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """The cached pages a waiting sequence can start from (its block hashes brought up to date)."""
        target = seq.prefill_target
        self._hash_full_blocks(seq, target)
        if seq.params.prompt_logprobs is not None:  # prompt logprobs need every prompt position computed
            return []
        # At least one token is computed, for the logits to sample from: a whole-prompt hit drops its last
        # block (recomputing into a fresh page never rewrites a shared one).
        hashes = seq.block_hashes[: (target - 1) // self.page_size]
        if self.sliding_window is None:
            return self.pool.cached_prefix(hashes)
        if not self.pool.enable_prefix_caching:
            return []
        # Windowed: skipping k blocks needs only the cached blocks the first computed token can see; the
        # ones before them are FREED_PAGE entries (a long-running sequence freed them, or the pool evicted
        # them first, being the least recently freed).
        found = [self.pool.cached_page(block_hash) for block_hash in hashes]
        num_blocks = windowed_cache_hit(found, self.sliding_window, self.page_size)
        first = first_needed_block(num_blocks * self.page_size, self.sliding_window, self.page_size)
        pages = [FREED_PAGE] * first
        for page in found[first:num_blocks]:
            assert page is not None  # windowed_cache_hit checked these blocks are cached
            pages.append(page)
        return pages

    def _admit(self, seq: Sequence, cached: list[int], budget: int, plan: StepPlan) -> PrefillChunk | None:
        """Give a waiting sequence a slot and the pages for its first chunk, or None if it cannot run yet."""
        target = seq.prefill_target
        start = len(cached) * self.page_size
        count = self.buckets.chunk_for(target - start, budget)
        new_pages = cdiv(start + count, self.page_size) - len(cached)

        def room_needed() -> int:
            # One spare page per running sequence, so admitting this one does not preempt another at once.
            return new_pages + self.pool.num_idle(cached) + len(self.running)

        while not self._free_slots or self.pool.num_free < room_needed():
            victim = self._worst_running()
            if victim is None or self.policy != "priority" or self.rank(victim) <= self.rank(seq):
                return None
            self._preempt(victim, plan)
        self.pool.share(cached)
        seq.block_table = cached + self.pool.allocate(new_pages)
        seq.num_computed = start
        seq.num_registered = len(cached)
        if seq.num_preemptions == 0:
            seq.num_cached_tokens = start
        seq.slot = heapq.heappop(self._free_slots)
        seq.status = SequenceStatus.PREFILLING
        self.waiting.remove(seq)
        self.running.append(seq)
        for block_hash in seq.block_hashes[len(cached) : target // self.page_size]:
            self._pending.setdefault(block_hash, seq.request_id)
        plan.admitted.append(seq)
        return PrefillChunk(seq, start, count)

    def _hash_full_blocks(self, seq: Sequence, num_tokens: int) -> None:
        """Extend the sequence's block hashes over the full blocks of its first num_tokens tokens. A
        waiting sequence is looked at every step: copy its tokens only when a block is still unhashed."""
        if len(seq.block_hashes) < num_tokens // self.page_size:
            seq.block_hashes = chain_block_hashes(
                seq.token_ids(0, num_tokens), self.page_size, seq.cache_salt, seq.block_hashes
            )

    def _held_back(self, seq: Sequence, num_cached: int) -> bool:
        """Whether the next block the sequence would compute is being computed by another request."""
        if not self.pool.enable_prefix_caching or seq.params.prompt_logprobs is not None:
            return False
        if num_cached >= len(seq.block_hashes):
            return False
        owner = self._pending.get(seq.block_hashes[num_cached])
        return owner is not None and owner != seq.request_id

    def _reserve(self, seq: Sequence, num_positions: int, plan: StepPlan) -> bool:
        """Make the block table cover positions below num_positions, preempting worse sequences for
        pages. False if `seq` itself had to be preempted."""
        needed = cdiv(num_positions, self.page_size) - len(seq.block_table)
        while needed > self.pool.num_free:
            victim = self._worst_running()
            assert victim is not None  # seq itself is running
            self._preempt(victim, plan)
            if victim is seq:
                return False
        if needed > 0:
            seq.block_table.extend(self.pool.allocate(needed))
        return True

    def reserve_ahead(self, seqs: list[Sequence]) -> bool:
        """Pages for one position past each sequence's last token, for a decode step dispatched before
        the one in flight is recorded: taken from the free pages for every sequence, or for none (no
        preemption while a step is in flight)."""
        needed = [cdiv(seq.num_tokens + 1, self.page_size) - len(seq.block_table) for seq in seqs]
        if sum(n for n in needed if n > 0) > self.pool.num_free:
            return False
        for seq, count in zip(seqs, needed, strict=True):
            if count > 0:
                seq.block_table.extend(self.pool.allocate(count))
        return True

    def _worst_running(self) -> Sequence | None:
        return max(self.running, key=self.rank, default=None)

    def _preempt(self, seq: Sequence, plan: StepPlan) -> None:
        """Free the sequence's pages and slot; it waits to be recomputed from its tokens so far."""
        self._free_resources(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_computed = 0
        seq.num_registered = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.append(seq)
        plan.preempted.append(seq)
        if seq in plan.decodes:
            plan.decodes.remove(seq)
        plan.prefills = [chunk for chunk in plan.prefills if chunk.seq is not seq]
        if seq in plan.admitted:
            plan.admitted.remove(seq)

    def _free_resources(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        if seq.slot is not None:
            heapq.heappush(self._free_slots, seq.slot)
            seq.slot = None
        self.pool.release(seq.block_table)
        seq.block_table = []
        self._drop_pending(seq)

    def _drop_pending(self, seq: Sequence) -> None:
        for block_hash in seq.block_hashes:
            if self._pending.get(block_hash) == seq.request_id:
                del self._pending[block_hash]

    # ---------------------------------------------------------------- after the step ran

    def computed(self, seq: Sequence, num_tokens: int) -> None:
        """`num_tokens` more of the sequence's tokens are now in the cache: record its newly full blocks
        in the prefix cache, then (sliding window) give back the pages no later query can read."""
        seq.num_computed += num_tokens
        num_full = seq.num_computed // self.page_size
        if num_full > seq.num_registered:
            self._hash_full_blocks(seq, seq.num_computed)
            for index in range(seq.num_registered, num_full):
                block_hash = seq.block_hashes[index]
                self.pool.register(seq.block_table[index], block_hash)
                if self._pending.get(block_hash) == seq.request_id:
                    del self._pending[block_hash]
            seq.num_registered = num_full
        self._free_outside_window(seq)

    def _free_outside_window(self, seq: Sequence) -> None:
        """Give back the pages below the window of the sequence's next query (at position num_computed).

        Registered blocks keep their hash on the free list, so they stay prefix-cache hits until the pool
        hands them out again. Earlier entries are already FREED_PAGE, so the walk stops at the first one.
        """
        if self.sliding_window is None:
            return
        end = min(
            first_needed_block(seq.num_computed, self.sliding_window, self.page_size), len(seq.block_table)
        )
        index = end
        while index > 0 and seq.block_table[index - 1] != FREED_PAGE:
            index -= 1
        for i in range(index, end):
            # One at a time, oldest first: the oldest block goes to the front of the eviction order, and a
            # windowed prefix hit needs the newest ones.
            self.pool.release([seq.block_table[i]])
            seq.block_table[i] = FREED_PAGE
