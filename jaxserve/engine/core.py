"""The synchronous engine: admits requests into cache slots and advances them one step at a time.

Runs on its own thread (see async_engine). Each step feeds at most one prefill chunk (so running
decodes keep a bounded inter-token latency while a long prompt arrives) and one decode step over
every sequence that has its prompt in the cache.
"""

from __future__ import annotations

import functools
import heapq
import logging
import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner, RowInput, RowOutput
from jaxserve.engine.sequence import Sequence, SequenceStatus
from jaxserve.engine.token_bans import step_bitmask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Add:
    seq: Sequence


@dataclass(frozen=True)
class _Abort:
    request_id: str


class EngineCore:
    """Owns the waiting queue, the slot table and the runner; only the engine thread calls step()."""

    def __init__(self, runner: ModelRunner, eos_token_ids: frozenset[int]) -> None:
        self.runner = runner
        self.eos_token_ids = eos_token_ids
        self.max_model_len = runner.buckets.max_model_len
        self.waiting: deque[Sequence] = deque()
        self.by_slot: dict[int, Sequence] = {}
        self._free_slots = list(range(runner.buckets.max_num_seqs))
        heapq.heapify(self._free_slots)
        self._inbox: queue.SimpleQueue[_Add | _Abort] = queue.SimpleQueue()

    # -- called from any thread
    def add(self, seq: Sequence) -> None:
        self._inbox.put(_Add(seq))

    def abort(self, request_id: str) -> None:
        self._inbox.put(_Abort(request_id))

    # -- engine thread only
    @property
    def num_running(self) -> int:
        return len(self.by_slot)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_free_slots(self) -> int:
        return len(self._free_slots)

    def has_work(self) -> bool:
        return bool(self.waiting or self.by_slot)

    def drain_inbox(self, block: bool, timeout: float | None = None) -> None:
        """Apply queued adds and aborts; with block=True, wait for at least one message first."""
        try:
            message = self._inbox.get(block=block, timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(message, _Add):
                self.waiting.append(message.seq)
            else:
                self._abort_now(message.request_id)
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return

    def step(self) -> None:
        """Admit, feed one prefill chunk, decode once. Faults fail the sequences they touched."""
        self._admit()
        prefilling = [s for s in self.by_slot.values() if s.status is SequenceStatus.PREFILLING]
        if prefilling:
            seq = min(prefilling, key=lambda s: s.arrival)  # first come, first served
            self._guarded([seq], lambda: self._prefill(seq))
        decoding = [s for s in self.by_slot.values() if s.status is SequenceStatus.DECODING]
        if decoding:
            self._guarded(decoding, lambda: self._decode(decoding))

    def _admit(self) -> None:
        while self.waiting and self._free_slots:
            seq = self.waiting.popleft()
            seq.slot = heapq.heappop(self._free_slots)
            seq.status = SequenceStatus.PREFILLING
            self.by_slot[seq.slot] = seq
            self._guarded(
                [seq], functools.partial(self.runner.start_sequence, seq.slot, seq.params, seq.prompt_ids)
            )

    def _prefill(self, seq: Sequence) -> None:
        assert seq.slot is not None
        remaining = len(seq.prompt_ids) - seq.num_prompt_computed
        chunk = min(remaining, self.runner.buckets.chunk_for(remaining))
        start = seq.num_prompt_computed
        ends_prompt = start + chunk == len(seq.prompt_ids)
        row = RowInput(
            seq.prompt_ids[start : start + chunk],
            start,
            seq.params,
            seq.seed,
            0,
            bitmask=self._bitmask(seq) if ends_prompt else None,
            counted=ends_prompt,
            next_ids=seq.prompt_ids[start + 1 : start + chunk + 1]
            if seq.params.prompt_logprobs is not None
            else None,
        )
        sampled, prompt_rows = self.runner.prefill_chunk(seq.slot, row)
        if prompt_rows is not None:
            seq.record_prompt_logprobs(start, prompt_rows)
        seq.num_prompt_computed += chunk
        if ends_prompt:
            seq.status = SequenceStatus.DECODING
            self._record(seq, sampled)

    def _decode(self, decoding: list[Sequence]) -> None:
        width = max(s.slot for s in decoding if s.slot is not None) + 1
        rows: list[RowInput | None] = [None] * width
        for seq in decoding:
            assert seq.slot is not None
            rows[seq.slot] = RowInput(
                [seq.output_ids[-1]],
                seq.num_tokens - 1,
                seq.params,
                seq.seed,
                len(seq.output_ids),
                bitmask=self._bitmask(seq),
            )
        sampled = self.runner.decode(rows)
        for seq in decoding:
            assert seq.slot is not None
            out = sampled[seq.slot]
            assert out is not None
            self._record(seq, out)

    def _bitmask(self, seq: Sequence) -> np.ndarray | None:
        return step_bitmask(
            seq.allowed_bitmask, self.runner.full_bitmask, seq.banned_tokens(self.eos_token_ids)
        )

    def _record(self, seq: Sequence, sampled: RowOutput) -> None:
        decision = seq.append_token(sampled, self.eos_token_ids, self.max_model_len)
        output = seq.make_output(decision)
        if decision is not None:
            self._release(seq)
        if output is not None:
            seq.emit(output)

    def _guarded(self, seqs: list[Sequence], work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            log.exception("engine step failed; failing %d request(s)", len(seqs))
            for seq in seqs:
                if seq.status is not SequenceStatus.FINISHED:
                    self._fail(seq, "the engine failed while running this request")

    def _fail(self, seq: Sequence, message: str) -> None:
        self._release(seq)
        seq.emit(
            RequestOutput(
                request_id=seq.request_id,
                prompt_token_ids=tuple(seq.prompt_ids),
                text=seq.text,
                token_ids=tuple(seq.output_ids),
                delta_text="",
                delta_token_ids=(),
                finished=True,
                finish_reason="error",
                error=message,
            )
        )

    def _release(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.FINISHED
        if seq.slot is not None:
            self.by_slot.pop(seq.slot, None)
            heapq.heappush(self._free_slots, seq.slot)
            seq.slot = None

    def _abort_now(self, request_id: str) -> None:
        for seq in list(self.waiting):
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                seq.status = SequenceStatus.FINISHED
        for seq in list(self.by_slot.values()):
            if seq.request_id == request_id:
                self._release(seq)
