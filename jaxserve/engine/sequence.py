"""Host-side state of one request while the engine runs it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from jaxserve.engine.detokenizer import IncrementalDetokenizer
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.stop import StopDecision, check_stop_strings, check_token, stop_string_holdback
from jaxserve.sampling.params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued, no cache slot yet
    PREFILLING = "prefilling"  # holds a slot; prompt partly in the cache
    DECODING = "decoding"  # prompt in the cache; one token per step
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
    status: SequenceStatus = SequenceStatus.WAITING
    slot: int | None = None
    num_prompt_computed: int = 0
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted_text_len: int = 0
    emitted_token_count: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def append_token(
        self, token_id: int, eos_token_ids: frozenset[int], max_model_len: int
    ) -> StopDecision | None:
        """Record a sampled token, update the text, and say whether the sequence is now finished."""
        self.output_ids.append(token_id)
        decision = check_token(token_id, self.params, eos_token_ids)
        if decision is None:
            new_text = self.detokenizer.push(token_id)
            self.text += new_text
            decision = check_stop_strings(self.text, len(new_text), self.params)
            if decision is not None and decision.truncate_text_at is not None:
                self.text = self.text[: decision.truncate_text_at]
        if decision is None and (len(self.output_ids) >= self.max_tokens or self.num_tokens >= max_model_len):
            decision = StopDecision("length")
        if decision is not None and decision.finish_reason == "length":
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
        )
