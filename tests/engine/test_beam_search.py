"""Beam search driven through the real AsyncEngine on the tiny random-weight model (no stand-ins)."""

from __future__ import annotations

import asyncio
import math

import pytest

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.beam_search import (
    MAX_BEAM_WIDTH,
    BeamSearchParams,
    FinishedBeam,
    beam_search,
    beam_search_score,
)
from jaxserve.engine.outputs import RequestOutput
from jaxserve.errors import InvalidRequest
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import EngineFactory, collect, prompt_ids

PROMPT = prompt_ids(12, 3)


@pytest.fixture
def engine(make_engine: EngineFactory) -> AsyncEngine:
    return make_engine()


def run_beams(engine: AsyncEngine, prompt: list[int] = PROMPT, **fields: object) -> list[FinishedBeam]:
    params = BeamSearchParams(**fields)  # type: ignore[arg-type]
    return asyncio.run(beam_search(engine, "beams", prompt, params))


def greedy(engine: AsyncEngine, max_tokens: int, prompt: list[int] = PROMPT) -> RequestOutput:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=0)
    return asyncio.run(collect(engine, prompt, params, "greedy"))


def test_width_one_is_greedy(engine: AsyncEngine) -> None:
    [beam] = run_beams(engine, beam_width=1, max_tokens=8, ignore_eos=True)
    reference = greedy(engine, 8)
    assert beam.output.token_ids == reference.token_ids
    # Random weights make random bytes; the beam's text is the full decode of its tokens.
    assert beam.output.text == engine.tokenizer.decode(reference.token_ids)
    assert (beam.output.finish_reason, beam.output.stop_reason) == ("length", None)
    assert reference.logprobs is not None
    assert beam.cumulative_logprob == pytest.approx(sum(e.logprob for e in reference.logprobs), abs=1e-4)


def test_n_distinct_beams_sorted_by_their_scores(engine: AsyncEngine) -> None:
    beams = run_beams(engine, beam_width=4, max_tokens=6, ignore_eos=True, logprobs=2)
    assert len(beams) == 4
    assert len({b.output.token_ids for b in beams}) == 4
    scores = [b.score for b in beams]
    assert scores == sorted(scores, reverse=True)
    for b in beams:
        assert len(b.output.token_ids) == 6 and b.output.finish_reason == "length"
        assert b.output.logprobs is not None and len(b.output.logprobs) == 6
        # The reported per-token logprobs add up to the beam's cumulative logprob, and the score is
        # vLLM's formula over prompt + generated tokens.
        assert sum(e.logprob for e in b.output.logprobs) == pytest.approx(b.cumulative_logprob, abs=1e-4)
        assert b.score == pytest.approx(b.cumulative_logprob / (len(PROMPT) + 6))
        assert all(len(e.top) == 2 and e.top[0][1] >= e.top[1][1] for e in b.output.logprobs)
        assert all(e.token_id in {t for t, _ in e.top} or e.rank > 2 for e in b.output.logprobs)


def test_the_best_beam_scores_at_least_the_greedy_sequence(engine: AsyncEngine) -> None:
    reference = greedy(engine, 6)
    assert reference.logprobs is not None
    greedy_score = beam_search_score(
        len(PROMPT) + 6, sum(e.logprob for e in reference.logprobs), length_penalty=1.0
    )
    best = run_beams(engine, beam_width=4, max_tokens=6, ignore_eos=True)[0]
    assert best.score >= greedy_score - 1e-6


def end_tokens(engine: AsyncEngine, count: int) -> tuple[int, ...]:
    """Tokens that the search meets as candidates early on, to use as stop tokens."""
    reference = greedy(engine, 6)
    return tuple(dict.fromkeys(reference.token_ids[1:]))[:count]


def test_stop_tokens_finish_beams_that_keep_their_logprob_but_not_their_length(engine: AsyncEngine) -> None:
    stops = end_tokens(engine, 2)
    beams = run_beams(engine, beam_width=4, max_tokens=8, ignore_eos=True, stop_token_ids=stops)
    stopped = [b for b in beams if b.output.finish_reason == "stop"]
    assert stopped, "the stop tokens are greedy continuations, so some beam ends on one"
    for b in stopped:
        assert b.output.stop_reason in stops
        assert not set(b.output.token_ids) & set(stops), "the end token is not part of the answer"
        generated = len(b.output.token_ids)
        assert b.score == pytest.approx(b.cumulative_logprob / (len(PROMPT) + generated))
    kept = run_beams(
        engine,
        beam_width=4,
        max_tokens=8,
        ignore_eos=True,
        stop_token_ids=stops,
        include_stop_str_in_output=True,
    )
    assert [b.output.token_ids[-1] for b in kept if b.output.finish_reason == "stop"] == [
        b.output.stop_reason for b in kept if b.output.finish_reason == "stop"
    ]
    assert [b.score for b in kept] == pytest.approx([b.score for b in beams])


def test_length_penalty_changes_only_the_final_ranking(engine: AsyncEngine) -> None:
    """Scores are cumulative logprob / (prompt + generated) ** length_penalty; the search itself does not
    depend on the penalty, so a larger one can only prefer a longer best beam."""
    stops = end_tokens(engine, 3)
    by_penalty = {
        penalty: run_beams(
            engine, beam_width=4, max_tokens=8, ignore_eos=True, stop_token_ids=stops, length_penalty=penalty
        )
        for penalty in (0.0, 1.0, 3.0)
    }
    for penalty, beams in by_penalty.items():
        assert len(beams) == 4
        for b in beams:
            seq_len = len(PROMPT) + len(b.output.token_ids)
            assert b.score == pytest.approx(b.cumulative_logprob / seq_len**penalty)
        assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)
    plain = by_penalty[0.0]
    assert [b.score for b in plain] == [b.cumulative_logprob for b in plain]
    lengths = {p: len(beams[0].output.token_ids) for p, beams in by_penalty.items()}
    assert lengths[0.0] <= lengths[1.0] <= lengths[3.0]
    assert len({len(b.output.token_ids) for bs in by_penalty.values() for b in bs}) > 1, "mixed lengths"


def test_min_tokens_keeps_end_tokens_out_until_reached(engine: AsyncEngine) -> None:
    stops = end_tokens(engine, 3)
    beams = run_beams(engine, beam_width=4, max_tokens=6, ignore_eos=True, stop_token_ids=stops, min_tokens=4)
    assert all(len(b.output.token_ids) >= 4 for b in beams)


def test_stop_strings_end_beams_with_the_string_as_reason(engine: AsyncEngine) -> None:
    text = greedy(engine, 6).text
    stop = next(ch for ch in text[1:] if ch.strip())  # a character the greedy text produces
    beams = run_beams(engine, beam_width=3, max_tokens=6, ignore_eos=True, stop=(stop,))
    stopped = [b for b in beams if b.output.finish_reason == "stop"]
    assert stopped
    for b in stopped:
        assert b.output.stop_reason == stop and stop not in b.output.text
    kept = run_beams(
        engine, beam_width=3, max_tokens=6, ignore_eos=True, stop=(stop,), include_stop_str_in_output=True
    )
    assert all(b.output.text.endswith(stop) for b in kept if b.output.finish_reason == "stop")


def test_prompt_logprobs_and_cached_tokens_come_from_the_first_step(engine: AsyncEngine) -> None:
    beams = run_beams(engine, beam_width=2, max_tokens=2, ignore_eos=True, prompt_logprobs=1)
    for b in beams:
        assert b.output.prompt_logprobs is not None and len(b.output.prompt_logprobs) == len(PROMPT)
        assert b.output.prompt_logprobs[0] is None
        assert b.output.logprobs is None and b.output.prompt_token_ids == tuple(PROMPT)
        assert 0 <= b.output.num_cached_tokens <= len(PROMPT)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"beam_width": MAX_BEAM_WIDTH + 1}, "n"),
        ({"beam_width": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_tokens": 9}, "min_tokens"),
        ({"logprobs": 21}, "logprobs"),
    ],
)
def test_out_of_range_params_name_the_field(fields: dict[str, int], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        BeamSearchParams(**{"beam_width": 2, "max_tokens": 8, **fields})  # type: ignore[arg-type]
    assert caught.value.param == param


def test_a_prompt_too_long_is_refused_by_the_engine(engine: AsyncEngine) -> None:
    with pytest.raises(InvalidRequest, match="maximum context length"):
        run_beams(engine, prompt_ids(engine.max_model_len, 1), beam_width=2, max_tokens=1)


def test_cancelling_aborts_the_step_requests(engine: AsyncEngine) -> None:
    async def start_and_cancel() -> None:
        max_tokens = engine.max_model_len - len(PROMPT)
        params = BeamSearchParams(beam_width=3, max_tokens=max_tokens, ignore_eos=True)
        task = asyncio.ensure_future(beam_search(engine, "leaver", PROMPT, params))
        while engine.in_flight == 0:  # cancel as soon as its first step requests run, not after a guess
            await asyncio.sleep(0.005)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.in_flight == 0

    asyncio.run(start_and_cancel())
    [beam] = run_beams(engine, beam_width=1, max_tokens=2, ignore_eos=True)
    assert len(beam.output.token_ids) == 2 and math.isfinite(beam.score)
