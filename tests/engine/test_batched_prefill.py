"""Prompt chunks of one size run together in one step (BucketConfig.max_prefill_rows): each request still
gets exactly what it gets alone, whatever its chunk's length, start position, sampling or logprobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner, PromptLogprobRows, RowInput, RowOutput
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import EngineFactory, arriving_at_once, collect, pool_back_to_full, prompt_ids, run

GREEDY = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)


@pytest.fixture
def prefill_rows(tiny_runner: ModelRunner, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The row count of every prompt-chunk step the shared runner runs during the test."""
    counts: list[int] = []
    real = tiny_runner.prefill_chunks

    def counting(rows: list[RowInput]) -> list[tuple[RowOutput, PromptLogprobRows | None]]:
        counts.append(len(rows))
        return real(rows)

    monkeypatch.setattr(tiny_runner, "prefill_chunks", counting)
    yield counts


def outcome(output: RequestOutput) -> tuple[object, ...]:
    """What must match exactly; logprobs are compared by `logprob_values` (a step of more rows sums its
    matmuls in another order, ~1e-7 apart)."""
    return (output.token_ids, output.finish_reason, output.num_cached_tokens, logprob_ids(output))


def logprob_ids(output: RequestOutput) -> list[tuple[int, int, tuple[int, ...]]]:
    entries = [*(output.prompt_logprobs or ()), *(output.logprobs or ())]
    return [(e.token_id, e.rank, tuple(i for i, _ in e.top)) for e in entries if e is not None]


def logprob_values(output: RequestOutput) -> list[float]:
    entries = [*(output.prompt_logprobs or ()), *(output.logprobs or ())]
    return [v for e in entries if e is not None for v in (e.logprob, *(lp for _, lp in e.top))]


def test_prompt_chunks_run_together_generate_what_each_generates_alone(
    make_engine: EngineFactory, prefill_rows: list[int]
) -> None:
    shared_prefix = prompt_ids(32, 9)  # two full pages, cached by the warm-up request below
    requests = [
        (prompt_ids(7, 1), GREEDY),
        # Its 6 uncached tokens start at position 32, beside chunks starting at 0.
        (shared_prefix + prompt_ids(6, 2), SamplingParams(temperature=0.0, max_tokens=8, logprobs=2)),
        (
            prompt_ids(5, 3),
            SamplingParams(temperature=1.0, seed=11, max_tokens=12, ignore_eos=True, prompt_logprobs=1),
        ),
        (prompt_ids(1, 4), GREEDY),  # a one-token chunk, padded to the chunk size
    ]
    alone_engine = make_engine()
    run(collect(alone_engine, shared_prefix + prompt_ids(9, 5), GREEDY, "warm-alone"))
    alone = [run(collect(alone_engine, p, s, f"alone-{i}")) for i, (p, s) in enumerate(requests)]
    assert alone[1].num_cached_tokens == 32 and alone[2].prompt_logprobs is not None

    engine = make_engine()
    run(collect(engine, shared_prefix + prompt_ids(9, 5), GREEDY, "warm"))
    prefill_rows.clear()
    outputs = arriving_at_once(engine, requests)
    assert [outcome(o) for o in outputs] == [outcome(o) for o in alone]
    for output, reference in zip(outputs, alone, strict=True):
        assert logprob_values(output) == pytest.approx(logprob_values(reference), abs=1e-5)
    # The scheduler admits all four in one step (a 32-token budget, chunks of 8 at most): one step.
    assert prefill_rows == [4]
    assert run(pool_back_to_full(engine))


def test_chunks_of_different_sizes_run_in_separate_steps(
    make_engine: EngineFactory, prefill_rows: list[int]
) -> None:
    requests = [(prompt_ids(n, 20 + n), GREEDY) for n in (3, 20, 6)]
    alone_engine = make_engine()
    alone = [run(collect(alone_engine, p, s, f"alone-{i}")).token_ids for i, (p, s) in enumerate(requests)]
    engine = make_engine()  # its own prefix cache: every prompt is computed again
    prefill_rows.clear()
    assert [o.token_ids for o in arriving_at_once(engine, requests)] == alone
    # The 32-token budget admits all three in one step (3 + 20 + 6 tokens). The 3- and 6-token chunks
    # (padded to 8) share a step; the 20-token one (padded to 32) runs in its own.
    assert prefill_rows == [2, 1]
    assert run(pool_back_to_full(engine))


def test_rows_with_a_bias_or_a_restriction_beside_plain_rows_each_get_their_own(
    make_engine: EngineFactory,
) -> None:
    """The sampler skips bias and bitmask for a batch whose rows have none (host flags per row): a step
    mixing such rows with plain ones applies each row's own, in prompt chunks and decode steps alike."""
    plain = [(prompt_ids(6, 30 + i), GREEDY) for i in range(2)]
    reference = make_engine()
    alone = [run(collect(reference, p, s, f"alone-{i}")).token_ids for i, (p, s) in enumerate(plain)]
    forced, allowed = 77, (40, 41, 42)
    requests = [
        plain[0],
        (
            prompt_ids(6, 40),
            SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, logit_bias={forced: 100}),
        ),
        (
            prompt_ids(6, 41),
            SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, allowed_token_ids=allowed),
        ),
        plain[1],
    ]
    outputs = arriving_at_once(make_engine(), requests)
    assert [outputs[0].token_ids, outputs[3].token_ids] == alone
    assert outputs[1].token_ids == (forced,) * 10
    assert set(outputs[2].token_ids) <= set(allowed) and len(outputs[2].token_ids) == 10
