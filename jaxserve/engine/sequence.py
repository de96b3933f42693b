"""Host-side state of one request while the engine runs it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jaxserve.engine.detokenizer import IncrementalDetokenizer
from jaxserve.engine.outputs import RequestOutput, TokenLogprob
from jaxserve.engine.runner import PromptLogprobRows, RowOutput
from jaxserve.engine.stop import StopDecision, check_stop_strings, check_token, stop_string_holdback
from jaxserve.engine.token_bans import banned_now
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.structured import GrammarMatcher


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued (new, or preempted and to be recomputed): no slot, no pages
    PREFILLING = "prefilling"  # holds a slot and pages; its tokens are partly in the cache
    DECODING = "decoding"  # every token but the last is in the cache; one token per step
    FINISHED = "finished"


@dataclass
class Sequence:
    """One request: its prompt, what it has generated, and where its text stands."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int  # 32-bit PRNG seed: the request's own, or drawn fresh when it gave none
    max_tokens: int  # resolved: the request's max_tokens or what is left of the context window
    detokenizer: IncrementalDetokenizer
    emit: Callable[[RequestOutput], None]  # delivers an output to the waiting request (thread-safe)
    arrival: int = 0  # admission order: prefill chunks are fed first come, first served
    allowed_bitmask: np.ndarray | None = None  # from allowed_token_ids; None = every token
    bad_words: tuple[tuple[int, ...], ...] = ()
    priority: int = 0  # lower runs first under the priority policy
    cache_salt: str | None = None  # prefix-cache entries are shared only under the same salt
    # Structured output: where the output stands in its grammar. It has consumed every output token, so
    # a preempted sequence resumes with it as is (recomputing the cache samples nothing).
    grammar: GrammarMatcher | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    slot: int | None = None  # row of the sampler's per-sequence state while running
    block_table: list[int] = field(default_factory=list)  # KV-cache pages, position p in [p // page_size]
    num_computed: int = 0  # leading tokens (prompt, then output) whose keys/values are in the cache
    block_hashes: list[bytes] = field(default_factory=list)  # of the full blocks of tokens seen so far
    num_registered: int = 0  # leading full blocks recorded in the prefix cache
    num_cached_tokens: int = 0  # prompt tokens taken from the prefix cache at first admission
    num_preemptions: int = 0
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted_text_len: int = 0
    emitted_token_count: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def prefill_target(self) -> int:
        """How many tokens must be in the cache before decoding: the prompt, or after a preemption
        every token but the last (the next decode step feeds that one)."""
        return self.num_tokens - 1 if self.output_ids else len(self.prompt_ids)

    def token_ids(self, start: int, stop: int) -> list[int]:
        """Tokens start..stop-1 of prompt followed by output."""
        n = len(self.prompt_ids)
        if stop <= n:
            return self.prompt_ids[start:stop]
        return (self.prompt_ids[start:] if start < n else []) + self.output_ids[max(0, start - n) : stop - n]

    def banned_tokens(self, eos_token_ids: frozenset[int], num_unseen: int = 0) -> list[int]:
        """What the next sample may not be, given the output so far (min_tokens, bad words) and
        `num_unseen` more tokens sampled but not yet on the host."""
        end_ids = frozenset(self.params.stop_token_ids)
        if not self.params.ignore_eos:
            end_ids |= eos_token_ids
        return banned_now(self.output_ids, self.bad_words, self.params.min_tokens, end_ids, num_unseen)

    def record_prompt_logprobs(self, start: int, rows: PromptLogprobRows) -> None:
        """Entry t of a chunk fed from prompt position `start` scores prompt token start + t + 1."""
        if not self.prompt_logprobs:
            self.prompt_logprobs.append(None)  # nothing precedes the first prompt token
        k = self.params.prompt_logprobs or 0
        for t in range(len(rows.logprob)):
            position = start + t + 1
            if position >= len(self.prompt_ids):
                break
            if position < len(self.prompt_logprobs):
                continue  # recorded before this sequence was preempted and recomputed
            self.prompt_logprobs.append(
                TokenLogprob(
                    self.prompt_ids[position],
                    float(rows.logprob[t]),
                    int(rows.rank[t]),
                    _top_pairs(rows.top_ids[t], rows.top_logprobs[t], k),
                )
            )

    def append_token(
        self, sampled: RowOutput, eos_token_ids: frozenset[int], max_model_len: int
    ) -> StopDecision | None:
        """Record a sampled token, update the text, and say whether the sequence is now finished."""
        token_id = sampled.token
        self.output_ids.append(token_id)
        if self.params.logprobs is not None:
            top = _top_pairs(sampled.top_ids, sampled.top_logprobs, self.params.logprobs)
            self.logprobs.append(TokenLogprob(token_id, sampled.logprob, sampled.rank, top))
        decision = check_token(token_id, self.params, eos_token_ids)
        grammar_done = False
        if decision is None:
            if self.grammar is not None:
                self.grammar.advance(token_id)
                grammar_done = self.grammar.finished
            new_text = self.detokenizer.push(token_id)
            self.text += new_text
            if len(self.output_ids) >= self.params.min_tokens:  # vLLM: no stop string before min_tokens
                decision = check_stop_strings(self.text, len(new_text), self.params)
            if decision is not None and decision.truncate_text_at is not None:
                self.text = self.text[: decision.truncate_text_at]
        if decision is None and grammar_done:
            # The grammar is complete and allows nothing more (only EOS): stop now instead of spending
            # a step on sampling the EOS it would force.
            decision = StopDecision("stop")
        if decision is None and (len(self.output_ids) >= self.max_tokens or self.num_tokens >= max_model_len):
            decision = StopDecision("length")
        if decision is not None and (decision.finish_reason == "length" or grammar_done):
            self.text += self.detokenizer.flush()
        return decision

    def make_output(self, decision: StopDecision | None) -> RequestOutput | None:
        """The delta since the last output, or None when nothing new may be shown yet."""
        finished = decision is not None
        visible_len = (
            len(self.text) if finished else max(0, len(self.text) - stop_string_holdback(self.params))
        )
        visible_len = max(visible_len, self.emitted_text_len)
        new_tokens = tuple(self.output_ids[self.emitted_token_count :])
        if not finished and visible_len == self.emitted_text_len and not new_tokens:
            return None
        delta = self.text[self.emitted_text_len : visible_len]
        self.emitted_text_len = visible_len
        self.emitted_token_count = len(self.output_ids)
        return RequestOutput(
            request_id=self.request_id,
            prompt_token_ids=tuple(self.prompt_ids),
            text=self.text[:visible_len],
            token_ids=tuple(self.output_ids),
            delta_text=delta,
            delta_token_ids=new_tokens,
            finished=finished,
            finish_reason=decision.finish_reason if decision else None,
            stop_reason=decision.stop_reason if decision else None,
            logprobs=tuple(self.logprobs) if self.params.logprobs is not None else None,
            prompt_logprobs=tuple(self.prompt_logprobs) if self.params.prompt_logprobs is not None else None,
            num_cached_tokens=self.num_cached_tokens,
        )


def _top_pairs(ids: np.ndarray, logprobs: np.ndarray, k: int) -> tuple[tuple[int, float], ...]:
    """The first k (token id, logprob) pairs of a most-likely-first top list."""
    return tuple((int(i), float(v)) for i, v in zip(ids[:k], logprobs[:k], strict=True))
