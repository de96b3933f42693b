"""The synchronous engine: runs the scheduler's plan on the model runner, one step at a time.

Runs on its own thread (see async_engine). A step feeds the prompt chunks the scheduler picked (within
the per-step token budget, so running decodes keep a bounded inter-token latency while a long prompt
arrives) and one decode step over every sequence that has its prompt in the cache.

Faults: an exception in one runner call fails the sequences of that call (they end with an error output)
and the engine goes on. If the call had already donated the KV cache or sampler state to XLA, those
buffers are gone for every sequence, so that fault is fatal: EngineDead stops the engine loop.
"""

from __future__ import annotations

import functools
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from jaxserve.engine.buckets import bucket_for
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner, PendingDecode, RowInput, RowOutput
from jaxserve.engine.scheduler import PrefillChunk, Scheduler
from jaxserve.engine.sequence import Sequence, SequenceStatus
from jaxserve.engine.token_bans import step_bitmask
from jaxserve.errors import EngineDead

log = logging.getLogger(__name__)

T = TypeVar("T")

RunnerCall = Literal["start", "prefill", "decode"]
FaultInjector = Callable[[RunnerCall, list[Sequence]], None]
"""A test hook called before each runner call with the call's kind and sequences; raising fails them."""


@dataclass(frozen=True)
class _InFlight:
    """A decode step on the device whose sampled tokens the engine has not recorded yet."""

    seqs: list[Sequence]
    pending: PendingDecode


@dataclass(frozen=True)
class _Add:
    seq: Sequence


@dataclass(frozen=True)
class _Abort:
    request_id: str


class EngineCore:
    """Owns the scheduler and the runner; only the engine thread calls step()."""

    def __init__(
        self,
        runner: ModelRunner,
        scheduler: Scheduler,
        eos_token_ids: frozenset[int],
        overlap_decode_steps: bool = True,
    ) -> None:
        """`overlap_decode_steps`: whether `_chain` may dispatch a decode step ahead (off: one step at a
        time)."""
        self.runner = runner
        self.scheduler = scheduler
        self.eos_token_ids = eos_token_ids
        self.max_model_len = runner.buckets.max_model_len
        self._inbox: queue.SimpleQueue[_Add | _Abort] = queue.SimpleQueue()
        # Tests only: runs before any device work of a call, so an injected fault leaves the cache intact.
        self.fault_injector: FaultInjector | None = None
        self._in_flight: _InFlight | None = None  # a decode step dispatched, its tokens not recorded yet
        self.overlap_decode_steps = overlap_decode_steps
        self.num_chained_steps = 0  # decode steps dispatched before their predecessor's tokens were read

    # -- called from any thread
    def add(self, seq: Sequence) -> None:
        self._inbox.put(_Add(seq))

    def abort(self, request_id: str) -> None:
        self._inbox.put(_Abort(request_id))

    # -- engine thread only
    @property
    def num_running(self) -> int:
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    @property
    def num_free_slots(self) -> int:
        return self.scheduler.num_free_slots

    @property
    def kv_cache_usage(self) -> float:
        return self.scheduler.pool.usage

    @property
    def num_preemptions(self) -> int:
        return self.scheduler.num_preemptions

    def has_work(self) -> bool:
        return self.scheduler.has_work() or self._in_flight is not None

    def drain_inbox(self, block: bool, timeout: float | None = None) -> None:
        """Apply queued adds and aborts; with block=True, wait for at least one message first."""
        try:
            message = self._inbox.get(block=block, timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(message, _Add):
                self.scheduler.add(message.seq)
            else:
                seq = self.scheduler.find(message.request_id)
                if seq is not None:
                    self.scheduler.finish(seq)
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return

    def step(self) -> None:
        """Record the decode step in flight, then plan and run the next step. Faults fail the sequences
        they touched.

        When the next step is the same batch decoding once more, it is dispatched before the tokens of
        the one in flight are read (`_chain`), so the host's work on those tokens (detokenizing, stop
        checks, streaming) and on packing the step overlaps the device's work. Otherwise the scheduler
        plans the step: the new sequences' slots, their prompt chunks (run in turn), and one decode
        step over every decoding sequence, left in flight for the next call to record."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            chained = self._chain(in_flight)
            self._guarded("decode", in_flight.seqs, lambda: self._record_decode(in_flight), inject=False)
            if chained is not None:
                self._in_flight = chained
                return
        plan = self.scheduler.schedule()
        for seq in plan.preempted:
            log.info("preempted %s (out of KV-cache pages); it will be recomputed", seq.request_id)
        for seq in plan.admitted:
            assert seq.slot is not None
            self._guarded(
                "start",
                [seq],
                functools.partial(
                    self.runner.start_sequence, seq.slot, seq.params, seq.prompt_ids, seq.output_ids
                ),
            )
        live = [chunk for chunk in plan.prefills if chunk.seq.status is SequenceStatus.PREFILLING]
        for group in self._prefill_groups(live):  # not failed by a fault above
            self._guarded("prefill", [chunk.seq for chunk in group], functools.partial(self._prefill, group))
        decoding = [s for s in plan.decodes if s.status is SequenceStatus.DECODING]
        if decoding:
            self._in_flight = self._guarded("decode", decoding, lambda: self._dispatch_decode(decoding))

    def _prefill_groups(self, chunks: list[PrefillChunk]) -> list[list[PrefillChunk]]:
        """The plan's prompt chunks as runner calls: chunks padded to the same chunk size share a step,
        in batches of the compiled row counts (in plan order within each size)."""
        buckets = self.runner.buckets
        by_size: dict[int, list[PrefillChunk]] = {}
        for chunk in chunks:
            by_size.setdefault(bucket_for(chunk.num_tokens, buckets.chunk_sizes), []).append(chunk)
        groups = []
        for chunk_size, same_size in by_size.items():
            start = 0
            for rows in buckets.prefill_batches(len(same_size), chunk_size):
                groups.append(same_size[start : start + rows])
                start += rows
        return groups

    def _prefill(self, group: list[PrefillChunk]) -> None:
        rows = [self._prefill_row(chunk) for chunk in group]
        outputs = self.runner.prefill_chunks(rows)
        for chunk, row, (sampled, prompt_rows) in zip(group, rows, outputs, strict=True):
            seq = chunk.seq
            if prompt_rows is not None:
                seq.record_prompt_logprobs(chunk.start, prompt_rows)
            self.scheduler.computed(seq, chunk.num_tokens)
            if chunk.ends_prefill:
                seq.status = SequenceStatus.DECODING
                if row.counted:
                    self._record(seq, sampled)

    def _prefill_row(self, chunk: PrefillChunk) -> RowInput:
        seq, start, count = chunk.seq, chunk.start, chunk.num_tokens
        assert seq.slot is not None
        # A resumed sequence already has its tokens: its last chunk samples nothing that counts.
        samples_first_token = chunk.ends_prefill and not seq.output_ids
        want_prompt_logprobs = seq.params.prompt_logprobs is not None and not seq.output_ids
        return RowInput(
            seq.token_ids(start, start + count),
            start,
            seq.params,
            seq.seed,
            0,
            seq.slot,
            seq.block_table,
            bitmask=self._bitmask(seq) if samples_first_token else None,
            counted=samples_first_token,
            next_ids=seq.prompt_ids[start + 1 : start + count + 1] if want_prompt_logprobs else None,
        )

    def _dispatch_decode(self, decoding: list[Sequence]) -> _InFlight:
        rows = [self._decode_row(seq) for seq in decoding]
        return _InFlight(decoding, self.runner.dispatch_decode(rows))

    def _decode_row(self, seq: Sequence, num_unseen: int = 0) -> RowInput:
        """The sequence's row of a decode step feeding its last token; with `num_unseen` 1, the token
        after it, which the step in flight is sampling (fed from the device: the row's token is ignored)."""
        assert seq.slot is not None
        return RowInput(
            [0] if num_unseen else [seq.output_ids[-1]],
            seq.num_tokens - 1 + num_unseen,
            seq.params,
            seq.seed,
            len(seq.output_ids) + num_unseen,
            seq.slot,
            seq.block_table,
            bitmask=self._bitmask(seq, num_unseen),
        )

    def _chain(self, in_flight: _InFlight) -> _InFlight | None:
        """Dispatch the in-flight batch's next decode step now, each row fed the token the step in flight
        samples for it, when nothing else may run first; else None.

        Nothing else may run first when every running sequence is in the batch and still decoding (none
        aborted, none prefilling), no waiting request could be admitted, and none of the batch ends by
        length at the step in flight. Each sequence's next bitmask must not depend on the token not yet
        read: no grammar, no bad words (min_tokens counts it unseen). The new step needs one more page
        position per sequence from the free pages (no preemption while a step is in flight). A sequence
        that the step in flight ends (EOS, a stop string) has its extra row discarded: its write lands in
        its own pages at a position past its end, before anything reuses them (steps run in order).
        """
        seqs = in_flight.seqs
        scheduler = self.scheduler
        if not self.overlap_decode_steps or not self.runner.can_feed_from_device:
            return None
        if scheduler.num_running != len(seqs):
            return None
        if scheduler.waiting and (scheduler.num_free_slots or scheduler.policy == "priority"):
            return None
        for seq in seqs:
            if seq.status is not SequenceStatus.DECODING or seq.grammar is not None or seq.bad_words:
                return None
            if len(seq.output_ids) + 1 >= seq.max_tokens or seq.num_tokens + 1 >= self.max_model_len:
                return None
        if not scheduler.reserve_ahead(seqs):
            return None

        def dispatch() -> _InFlight:
            rows = [self._decode_row(seq, num_unseen=1) for seq in seqs]
            return _InFlight(seqs, self.runner.dispatch_decode(rows, after=in_flight.pending))

        chained = self._guarded("decode", seqs, dispatch)
        if chained is not None:
            self.num_chained_steps += 1
        return chained

    def _record_decode(self, in_flight: _InFlight) -> None:
        sampled = self.runner.collect(in_flight.pending)
        for seq, out in zip(in_flight.seqs, sampled, strict=True):
            if seq.status is not SequenceStatus.DECODING:
                continue  # aborted or failed while the step ran, or ended by the step before a chained one
            self.scheduler.computed(seq, 1)
            self._record(seq, out)

    def _bitmask(self, seq: Sequence, num_unseen: int = 0) -> np.ndarray | None:
        """The row's allowed tokens for this sample: called once per sampled token, since a grammar
        mask costs real host time. `num_unseen`: output tokens sampled but not yet on the host."""
        full = self.runner.full_bitmask
        restrictions = step_bitmask(
            seq.allowed_bitmask, full, seq.banned_tokens(self.eos_token_ids, num_unseen)
        )
        if seq.grammar is None:
            return restrictions
        return seq.grammar.step_bitmask(full if restrictions is None else restrictions)

    def _record(self, seq: Sequence, sampled: RowOutput) -> None:
        decision = seq.append_token(sampled, self.eos_token_ids, self.max_model_len)
        output = seq.make_output(decision)
        if decision is not None:
            self.scheduler.finish(seq)
        if output is not None:
            seq.emit(output)

    def _guarded(
        self, kind: RunnerCall, seqs: list[Sequence], work: Callable[[], T], *, inject: bool = True
    ) -> T | None:
        """`work()`, or None after failing `seqs` if it raised. `inject`: a runner call the test fault
        injector may fail (reading a step's results is part of the call that dispatched it)."""
        try:
            if inject and self.fault_injector is not None:
                self.fault_injector(kind, seqs)
            return work()
        except Exception as exc:
            log.exception("engine step failed; failing %d request(s)", len(seqs))
            for seq in seqs:
                if seq.status is not SequenceStatus.FINISHED:
                    self._fail(seq, "the engine failed while running this request")
            if self.runner.state_lost():
                raise EngineDead("the engine lost its KV cache in a fault and stopped") from exc
            return None

    def fail_all(self, message: str) -> None:
        """Fail every queued and running sequence, and any still in the inbox (the engine is stopping)."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Add):
                self.scheduler.add(item.seq)
        for seq in self.scheduler.running + self.scheduler.waiting:
            self._fail(seq, message)

    def _fail(self, seq: Sequence, message: str) -> None:
        self.scheduler.finish(seq)
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
