"""`n`, per-choice seeds, the priority policy check and beam-search parameters, from request fields."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.engine.beam_search import BeamSearchParams
from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol import ChatCompletionRequest
from jaxserve.http.translate.beam import beam_search_params, check_beam_search_fields
from jaxserve.http.translate.choices import (
    MAX_CHOICES,
    check_priority,
    choice_params,
    choice_request_id,
    requested_n,
)
from jaxserve.http.translate.sampling import to_sampling_params
from jaxserve.sampling.params import SamplingParams


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


@pytest.mark.parametrize(("n", "expected"), [(None, 1), (1, 1), (7, 7), (MAX_CHOICES, MAX_CHOICES)])
def test_n_is_one_to_the_limit(n: int | None, expected: int) -> None:
    assert requested_n(n) == expected


@pytest.mark.parametrize("n", [0, -1, MAX_CHOICES + 1])
def test_n_out_of_range_is_a_400_naming_n(n: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        requested_n(n)
    assert caught.value.param == "n" and caught.value.status == 400


def test_choice_i_is_seeded_seed_plus_i() -> None:
    params = SamplingParams(seed=41, temperature=0.7, max_tokens=5)
    assert [choice_params(params, i).seed for i in range(3)] == [41, 42, 43]
    assert choice_params(params, 2).temperature == 0.7 and choice_params(params, 2).max_tokens == 5
    assert choice_params(params, 0) is params


def test_unseeded_choices_stay_unseeded() -> None:
    params = SamplingParams(temperature=0.7)
    assert all(choice_params(params, i).seed is None for i in range(3))


def test_a_seed_sum_of_minus_one_stays_a_seed() -> None:
    """seed -1 means "no seed" to SamplingParams; -2 + 1 must not turn choice 1 into an unseeded one."""
    assert choice_params(SamplingParams(seed=-2), 1).seed == 2**64 - 1


def test_choice_request_ids_are_distinct_only_when_needed() -> None:
    assert choice_request_id("r", 0, 1) == "r"
    assert [choice_request_id("r", i, 3) for i in range(3)] == ["r-0", "r-1", "r-2"]


def test_priority_needs_the_priority_policy() -> None:
    check_priority(0, "fcfs")
    check_priority(-5, "priority")
    with pytest.raises(InvalidRequest) as caught:
        check_priority(2, "fcfs")
    assert caught.value.param == "priority" and "--scheduling-policy priority" in caught.value.message


def beam(**fields: Any) -> BeamSearchParams:
    chat = request(use_beam_search=True, **fields)
    check_beam_search_fields(chat)
    return beam_search_params(chat, to_sampling_params(chat, prompt_len=10, max_model_len=100))


def test_beam_search_params_carry_the_width_and_the_stop_rules() -> None:
    params = beam(
        n=3,
        max_tokens=20,
        length_penalty=0.6,
        stop=["\n"],
        stop_token_ids=[7],
        ignore_eos=True,
        include_stop_str_in_output=True,
        min_tokens=2,
        logprobs=True,
        top_logprobs=4,
        prompt_logprobs=1,
        skip_special_tokens=False,
    )
    assert params == BeamSearchParams(
        beam_width=3,
        max_tokens=20,
        length_penalty=0.6,
        ignore_eos=True,
        include_stop_str_in_output=True,
        stop=("\n",),
        stop_token_ids=(7,),
        min_tokens=2,
        skip_special_tokens=False,
        logprobs=4,
        prompt_logprobs=1,
    )


def test_beam_search_max_tokens_defaults_to_the_room_left() -> None:
    assert beam().max_tokens == 90 and beam().beam_width == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 1.3},
        {"seed": 5},
        {"top_p": 1.0},
        {"top_k": -1},
        {"min_p": 0},
        {"repetition_penalty": 1},
    ],
)
def test_values_that_change_nothing_are_accepted_with_beam_search(fields: dict[str, Any]) -> None:
    beam(**fields)


def test_length_penalty_needs_beam_search() -> None:
    check_beam_search_fields(request(length_penalty=1.0))
    with pytest.raises(InvalidRequest) as caught:
        check_beam_search_fields(request(length_penalty=2.0))
    assert caught.value.param == "length_penalty"
