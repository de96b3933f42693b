"""Request fields -> SamplingParams."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol import ChatCompletionRequest
from jaxserve.http.translate.sampling import to_sampling_params
from jaxserve.sampling.params import SamplingParams


def params(prompt_len: int = 10, max_model_len: int = 100, **fields: Any) -> SamplingParams:
    request = ChatCompletionRequest.model_validate({"messages": [], **fields})
    return to_sampling_params(request, prompt_len=prompt_len, max_model_len=max_model_len)


def test_defaults_are_openai_defaults_and_fill_the_context() -> None:
    result = params()
    assert result.temperature == 1.0
    assert result.top_p == 1.0
    assert result.max_tokens == 90
    assert result.seed is None
    assert result.stop == ()
    assert result.stop_token_ids == ()
    assert (result.ignore_eos, result.include_stop_str_in_output, result.skip_special_tokens) == (
        False,
        False,
        True,
    )


def test_null_temperature_and_top_p_mean_the_defaults() -> None:
    result = params(temperature=None, top_p=None)
    assert (result.temperature, result.top_p) == (1.0, 1.0)


def test_max_completion_tokens_takes_precedence_over_max_tokens() -> None:
    assert params(max_tokens=5, max_completion_tokens=7).max_tokens == 7
    assert params(max_tokens=5).max_tokens == 5
    assert params(max_completion_tokens=7).max_tokens == 7


def test_max_tokens_is_capped_to_the_room_left_after_the_prompt() -> None:
    assert params(prompt_len=95, max_completion_tokens=50).max_tokens == 5


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_below_one_is_refused_naming_the_field_used(name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        params(**{name: 0})
    assert caught.value.param == name


def test_a_prompt_that_fills_the_context_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        params(prompt_len=100, max_model_len=100)
    assert caught.value.param == "messages"
    assert caught.value.code == "context_length_exceeded"


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        params(prompt_len=0)


def test_stop_may_be_a_string_or_a_list() -> None:
    assert params(stop="\n").stop == ("\n",)
    assert params(stop=["a", "bc"]).stop == ("a", "bc")
    assert params(stop=None).stop == ()


def test_stop_and_eos_options_are_passed_on() -> None:
    result = params(
        stop_token_ids=[7, 8],
        ignore_eos=True,
        include_stop_str_in_output=True,
        skip_special_tokens=False,
        seed=-3,
        temperature=0.0,
        top_p=0.5,
    )
    assert result.stop_token_ids == (7, 8)
    assert (result.ignore_eos, result.include_stop_str_in_output, result.skip_special_tokens) == (
        True,
        True,
        False,
    )
    assert (result.seed, result.temperature, result.top_p) == (-3, 0.0, 0.5)
    assert result.greedy


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"temperature": -0.1}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"stop": ["ok", ""]}, "stop")],
)
def test_out_of_range_values_are_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        params(**fields)
    assert caught.value.param == param
