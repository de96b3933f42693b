"""Beam search over the engine client: vLLM's algorithm (`OpenAIServing.beam_search`), host-side only.

Every step asks the engine for ONE token of each live beam (`max_tokens=1`, greedy) together with its
top `2 * beam_width` raw-model logprobs; the step's requests run concurrently, so the engine batches them,
and each beam's prompt (the request's prompt plus the beam's tokens so far) is mostly served from the
prefix cache. The candidates are every beam extended by one of its top tokens, ranked by cumulative
logprob; the best `beam_width` that do not end a sequence live on. As in vLLM:

* a candidate ending in an end token (EOS unless `ignore_eos`, or one of `stop_token_ids`) is set aside
  as finished whatever its rank, with `stop_reason` = that token id; the token counts in its cumulative
  logprob but not in its length, and it is part of `token_ids` only with `include_stop_str_in_output`
  (its text never is);
* search runs for `max_tokens` steps (it does not stop early once enough beams have finished: a longer
  beam can still score better after length normalisation); the beams alive at the end finish with
  "length";
* the answer is the `beam_width` best of all finished beams by `beam_search_score`, best first.

Beyond vLLM's beam search (which ignores them), stop strings and `min_tokens` are honoured as in
ordinary generation: a candidate whose text completes a stop string finishes with that string as its
`stop_reason` (checked, like vLLM's detokenizer does, only once more than `min_tokens` tokens exist), and
no end token is a candidate before `min_tokens` tokens. Stop strings are checked on the candidates in
rank order until the next beams are chosen, so only candidates that would otherwise have lived on can
finish by one.

Beam search is deterministic: candidates come from raw-model logprobs, so no temperature or seed enters.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from jaxserve.engine.outputs import RequestOutput, TokenLogprob
from jaxserve.engine.protocol import EngineClient
from jaxserve.engine.stop import check_stop_strings
from jaxserve.errors import EngineFault, InvalidRequest
from jaxserve.sampling.params import MAX_LOGPROBS, SamplingParams

MAX_BEAM_WIDTH = MAX_LOGPROBS // 2
"""Each beam's candidates are its top 2 * width tokens (vLLM's choice: enough that `width` survive even
if every beam's best tokens end it), and the engine reports at most MAX_LOGPROBS (20) per token."""

T = TypeVar("T")


@dataclass(frozen=True)
class BeamSearchParams:
    """What one beam search is asked for (vLLM's `BeamSearchParams`, plus the stop rules it ignores).

    `logprobs` / `prompt_logprobs`: how many top alternatives to report per generated / prompt token
    (None: not requested), as in SamplingParams.
    """

    beam_width: int
    max_tokens: int
    length_penalty: float = 1.0
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    skip_special_tokens: bool = True
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.beam_width <= MAX_BEAM_WIDTH:
            raise InvalidRequest(
                f"beam search needs n (the beam width) between 1 and {MAX_BEAM_WIDTH}, got "
                f"{self.beam_width}: each beam's candidates are its top 2 * n tokens and the engine "
                f"reports at most {MAX_LOGPROBS}",
                param="n",
            )
        if not math.isfinite(self.length_penalty):
            raise InvalidRequest(
                f"length_penalty must be a finite number, got {self.length_penalty}", param="length_penalty"
            )
        if self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be at least 1, got {self.max_tokens}", param="max_tokens")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidRequest(
                f"min_tokens must be between 0 and max_tokens={self.max_tokens}, got {self.min_tokens}",
                param="min_tokens",
            )
        if any(not s for s in self.stop):
            raise InvalidRequest("stop strings must be non-empty", param="stop")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_LOGPROBS:
                raise InvalidRequest(f"{name} must be between 0 and {MAX_LOGPROBS}, got {value}", param=name)


@dataclass(frozen=True)
class FinishedBeam:
    """One answer: the engine-style final output, its cumulative logprob and its beam search score."""

    output: RequestOutput
    cumulative_logprob: float
    score: float


@dataclass(frozen=True)
class _Beam:
    """A live hypothesis: the tokens generated so far and what they cost."""

    token_ids: tuple[int, ...]
    cumulative_logprob: float
    logprobs: tuple[TokenLogprob, ...]
    text: str = ""  # decoded only when stop strings have to be checked


@dataclass(frozen=True)
class _Candidate:
    beam: _Beam
    token_id: int
    cumulative_logprob: float
    entry: TokenLogprob  # the token's logprob record as the answer reports it


def beam_search_score(seq_len: int, cumulative_logprob: float, length_penalty: float) -> float:
    """vLLM's `get_beam_search_score` (after Hugging Face): cumulative logprob / seq_len ** length_penalty.

    `seq_len` counts the PROMPT and the generated tokens, without a final end token (vLLM's definition,
    kept so scores and rankings match it). A larger length_penalty favours longer sequences.
    """
    return cumulative_logprob / (seq_len**length_penalty)


async def beam_search(
    engine: EngineClient,
    request_id: str,
    prompt_token_ids: Sequence[int],
    params: BeamSearchParams,
    *,
    priority: int = 0,
    cache_salt: str | None = None,
) -> list[FinishedBeam]:
    """The `params.beam_width` best finished beams, best score first (see the module docstring).

    Cancelling the call closes the step requests in flight, which aborts them in the engine. An engine
    refusal (e.g. a prompt too long) or fault propagates.
    """
    prompt = list(prompt_token_ids)
    width = params.beam_width
    end_ids = frozenset(params.stop_token_ids) | (
        frozenset() if params.ignore_eos else frozenset(engine.tokenizer.eos_token_ids)
    )
    stop_rules = SamplingParams(
        stop=params.stop, include_stop_str_in_output=params.include_stop_str_in_output
    )
    num_top = max(2 * width, params.logprobs or 0)
    beams = [_Beam(token_ids=(), cumulative_logprob=0.0, logprobs=())]
    finished: list[FinishedBeam] = []
    first: RequestOutput | None = None

    def decode(token_ids: Sequence[int]) -> str:
        return engine.tokenizer.decode(token_ids, skip_special_tokens=params.skip_special_tokens)

    def finish(
        token_ids: tuple[int, ...],
        logprobs: tuple[TokenLogprob, ...],
        cumulative_logprob: float,
        *,
        text: str,
        seq_len: int,
        finish_reason: str,
        stop_reason: int | str | None = None,
    ) -> FinishedBeam:
        return FinishedBeam(
            output=RequestOutput(
                request_id=request_id,
                prompt_token_ids=tuple(prompt),
                text=text,
                token_ids=token_ids,
                delta_text=text,
                delta_token_ids=token_ids,
                finished=True,
                finish_reason=finish_reason,
                stop_reason=stop_reason,
                logprobs=logprobs if params.logprobs is not None else None,
                prompt_logprobs=first.prompt_logprobs if first is not None else None,
                num_cached_tokens=first.num_cached_tokens if first is not None else 0,
            ),
            cumulative_logprob=cumulative_logprob,
            score=beam_search_score(seq_len, cumulative_logprob, params.length_penalty),
        )

    for step in range(params.max_tokens):
        if not beams:
            break
        step_params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=num_top,
            ignore_eos=True,  # the candidates are judged here; the engine must not ban or stop on EOS
            prompt_logprobs=params.prompt_logprobs if step == 0 else None,
        )
        outputs = await _all_or_none(
            _next_token(
                engine,
                f"{request_id}-step{step}-beam{index}",
                prompt + list(beam.token_ids),
                step_params,
                priority=priority,
                cache_salt=cache_salt,
            )
            for index, beam in enumerate(beams)
        )
        if first is None:
            first = outputs[0]

        may_end = step >= params.min_tokens  # this step's token is number step + 1
        live: list[_Candidate] = []
        for beam, output in zip(beams, outputs, strict=True):
            assert output.logprobs  # _next_token checked
            top = output.logprobs[-1].top
            for rank, (token_id, logprob) in enumerate(top[: 2 * width], start=1):
                candidate = _Candidate(
                    beam=beam,
                    token_id=token_id,
                    cumulative_logprob=beam.cumulative_logprob + logprob,
                    entry=TokenLogprob(token_id, logprob, rank, top[: params.logprobs or 0]),
                )
                if token_id not in end_ids:
                    live.append(candidate)
                elif may_end:  # an end token before min_tokens is no candidate at all (it is banned)
                    kept = (token_id,) if params.include_stop_str_in_output else ()
                    finished.append(
                        finish(
                            beam.token_ids + kept,
                            beam.logprobs + ((candidate.entry,) if kept else ()),
                            candidate.cumulative_logprob,
                            text=decode(beam.token_ids),
                            seq_len=len(prompt) + len(beam.token_ids),
                            finish_reason="stop",
                            stop_reason=token_id,
                        )
                    )

        live.sort(key=lambda c: c.cumulative_logprob, reverse=True)  # stable: ties keep beam, rank order
        next_beams: list[_Beam] = []
        for candidate in live:
            if len(next_beams) == width:
                break
            token_ids = candidate.beam.token_ids + (candidate.token_id,)
            logprobs = candidate.beam.logprobs + (candidate.entry,)
            text = decode(token_ids) if params.stop else ""
            if params.stop and len(token_ids) > params.min_tokens:
                parent_text = candidate.beam.text
                new_len = len(text) - len(os.path.commonprefix([parent_text, text]))
                decision = check_stop_strings(text, new_len, stop_rules)
                if decision is not None:
                    finished.append(
                        finish(
                            token_ids,
                            logprobs,
                            candidate.cumulative_logprob,
                            text=text[: decision.truncate_text_at],
                            seq_len=len(prompt) + len(token_ids),
                            finish_reason="stop",
                            stop_reason=decision.stop_reason,
                        )
                    )
                    continue
            next_beams.append(_Beam(token_ids, candidate.cumulative_logprob, logprobs, text))
        beams = next_beams

    for beam in beams:
        finished.append(
            finish(
                beam.token_ids,
                beam.logprobs,
                beam.cumulative_logprob,
                text=beam.text if params.stop else decode(beam.token_ids),
                seq_len=len(prompt) + len(beam.token_ids),
                finish_reason="length",
            )
        )
    finished.sort(key=lambda b: b.score, reverse=True)
    return finished[:width]


async def _next_token(
    engine: EngineClient,
    request_id: str,
    token_ids: list[int],
    params: SamplingParams,
    *,
    priority: int,
    cache_salt: str | None,
) -> RequestOutput:
    """The finished output of a one-token request (with its logprobs)."""
    stream = engine.generate(request_id, token_ids, params, priority=priority, cache_salt=cache_salt)
    last: RequestOutput | None = None
    try:
        async for output in stream:
            last = output
    finally:
        await _aclose(stream)  # a no-op after a normal end; after a cancellation it has run already
    if last is None or not last.finished or not last.logprobs or not last.logprobs[-1].top:
        raise EngineFault(f"the engine returned no token logprobs for beam search step {request_id}")
    return last


async def _all_or_none(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; the first failure (or a cancellation) cancels the rest, which aborts their
    engine requests, and waits for them before propagating."""
    tasks: list[asyncio.Future[T]] = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
