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
from typing import Literal

import numpy as np

from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner, RowInput, RowOutput
from jaxserve.engine.scheduler import PrefillChunk, Scheduler
from jaxserve.engine.sequence import Sequence, SequenceStatus
from jaxserve.engine.token_bans import step_bitmask
from jaxserve.errors import EngineDead

log = logging.getLogger(__name__)

RunnerCall = Literal["start", "prefill", "decode"]
FaultInjector = Callable[[RunnerCall, list[Sequence]], None]
"""A test hook called before each runner call with the call's kind and sequences; raising fails them."""


@dataclass(frozen=True)
class _Add:
    seq: Sequence


@dataclass(frozen=True)
class _Abort:
    request_id: str


class EngineCore:
    """Owns the scheduler and the runner; only the engine thread calls step()."""

    def __init__(self, runner: ModelRunner, scheduler: Scheduler, eos_token_ids: frozenset[int]) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.eos_token_ids = eos_token_ids
        self.max_model_len = runner.buckets.max_model_len
        self._inbox: queue.SimpleQueue[_Add | _Abort] = queue.SimpleQueue()
        # Tests only: runs before any device work of a call, so an injected fault leaves the cache intact.
        self.fault_injector: FaultInjector | None = None

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
        return self.scheduler.has_work()

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
        """Schedule, then run the planned prefill chunks and one decode. Faults fail the sequences they touched."""
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
        for chunk in plan.prefills:
            if chunk.seq.status is SequenceStatus.PREFILLING:  # not failed by a fault above
                self._guarded("prefill", [chunk.seq], functools.partial(self._prefill, chunk))
        decoding = [s for s in plan.decodes if s.status is SequenceStatus.DECODING]
        if decoding:
            self._guarded("decode", decoding, lambda: self._decode(decoding))

    def _prefill(self, chunk: PrefillChunk) -> None:
        seq, start, count = chunk.seq, chunk.start, chunk.num_tokens
        assert seq.slot is not None
        ends = chunk.ends_prefill
        samples_first_token = ends and not seq.output_ids  # a resumed sequence already has its tokens
        want_prompt_logprobs = seq.params.prompt_logprobs is not None and not seq.output_ids
        row = RowInput(
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
        sampled, prompt_rows = self.runner.prefill_chunk(row)
        if prompt_rows is not None:
            seq.record_prompt_logprobs(start, prompt_rows)
        self.scheduler.computed(seq, count)
        if ends:
            seq.status = SequenceStatus.DECODING
            if samples_first_token:
                self._record(seq, sampled)

    def _decode(self, decoding: list[Sequence]) -> None:
        rows = []
        for seq in decoding:
            assert seq.slot is not None
            rows.append(
                RowInput(
                    [seq.output_ids[-1]],
                    seq.num_tokens - 1,
                    seq.params,
                    seq.seed,
                    len(seq.output_ids),
                    seq.slot,
                    seq.block_table,
                    bitmask=self._bitmask(seq),
                )
            )
        sampled = self.runner.decode(rows)
        for seq, out in zip(decoding, sampled, strict=True):
            self.scheduler.computed(seq, 1)
            self._record(seq, out)

    def _bitmask(self, seq: Sequence) -> np.ndarray | None:
        """The row's allowed tokens for this sample: called once per sampled token, since a grammar
        mask costs real host time."""
        full = self.runner.full_bitmask
        restrictions = step_bitmask(seq.allowed_bitmask, full, seq.banned_tokens(self.eos_token_ids))
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

    def _guarded(self, kind: RunnerCall, seqs: list[Sequence], work: Callable[[], None]) -> None:
        try:
            if self.fault_injector is not None:
                self.fault_injector(kind, seqs)
            work()
        except Exception as exc:
            log.exception("engine step failed; failing %d request(s)", len(seqs))
            for seq in seqs:
                if seq.status is not SequenceStatus.FINISHED:
                    self._fail(seq, "the engine failed while running this request")
            if self.runner.state_lost():
                raise EngineDead("the engine lost its KV cache in a fault and stopped") from exc

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
