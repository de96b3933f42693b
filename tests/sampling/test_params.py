"""SamplingParams: vLLM's ranges, normalisations and the request field each error names."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.sampling.params import SamplingParams


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": float("nan")}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop"),
        ({"n": 0}, "n"),
        ({"n": 2, "temperature": 0.0}, "n"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": -0.1}, "min_p"),
        ({"min_p": 1.1}, "min_p"),
        ({"presence_penalty": 2.1}, "presence_penalty"),
        ({"presence_penalty": -2.1}, "presence_penalty"),
        ({"frequency_penalty": 2.1}, "frequency_penalty"),
        ({"frequency_penalty": -2.1}, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
        ({"repetition_penalty": float("inf")}, "repetition_penalty"),
        ({"logit_bias": {"x": 1.0}}, "logit_bias"),
        ({"logit_bias": {5: float("nan")}}, "logit_bias"),
        ({"allowed_token_ids": ()}, "allowed_token_ids"),
        ({"bad_words": ("ok", "")}, "bad_words"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": 21}, "logprobs"),
        ({"prompt_logprobs": -1}, "prompt_logprobs"),
        ({"prompt_logprobs": 21}, "prompt_logprobs"),
    ],
)
def test_invalid_params_name_the_field(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(**kwargs)
    assert err.value.param == param
    assert err.value.status == 400


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"temperature": 2.0},
        {"top_p": 1e-9},
        {"top_k": 1},
        {"top_k": 10**12},
        {"min_p": 0.0},
        {"min_p": 1.0},
        {"presence_penalty": -2.0, "frequency_penalty": 2.0},
        {"repetition_penalty": 1e-3},
        {"repetition_penalty": 50.0},  # vLLM sets no upper bound
        {"min_tokens": 4, "max_tokens": 4},
        {"min_tokens": 1000},  # max_tokens None: checked against the context later
        {"logprobs": 0, "prompt_logprobs": 20},
        {"n": 3},
    ],
)
def test_valid_edges_are_accepted(kwargs: dict[str, Any]) -> None:
    SamplingParams(**kwargs)


def test_top_k_minus_one_means_off() -> None:
    assert SamplingParams(top_k=-1).top_k == 0


def test_seed_minus_one_means_no_seed() -> None:
    assert SamplingParams(seed=-1).seed is None
    assert SamplingParams(seed=-3).seed == -3


def test_logit_bias_is_clamped_and_keyed_by_int() -> None:
    json_bias: dict = {"5": 250.0, 7: -1e9, 9: 3.5, 11: float("inf")}  # JSON object keys are strings
    params = SamplingParams(logit_bias=json_bias)
    assert params.logit_bias == {5: 100.0, 7: -100.0, 9: 3.5, 11: 100.0}


def test_temperature_below_epsilon_is_greedy() -> None:
    assert SamplingParams(temperature=0.0).greedy
    assert SamplingParams(temperature=5e-6, top_k=5, top_p=0.5).greedy
    assert not SamplingParams(temperature=1e-5).greedy


def test_tiny_sampling_temperature_is_raised_to_vllm_floor() -> None:
    params = SamplingParams(temperature=1e-3)
    assert not params.greedy
    assert params.temperature == 1e-2
    assert SamplingParams(temperature=0.5).temperature == 0.5


def test_sequences_become_tuples_and_params_stay_hashable() -> None:
    lists: dict[str, Any] = {"stop": ["a"], "allowed_token_ids": [1, 2], "bad_words": ["x"]}
    params = SamplingParams(**lists, logit_bias={1: 1.0})
    assert params.stop == ("a",) and params.allowed_token_ids == (1, 2) and params.bad_words == ("x",)
    hash(params)
    assert params == SamplingParams(
        stop=("a",), allowed_token_ids=(1, 2), bad_words=("x",), logit_bias={1: 1.0}
    )
    assert params != SamplingParams(
        stop=("a",), allowed_token_ids=(1, 2), bad_words=("x",), logit_bias={1: 2.0}
    )


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"logit_bias": {100: 1.0}}, "logit_bias"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias"),
        ({"allowed_token_ids": (0, 100)}, "allowed_token_ids"),
        ({"stop_token_ids": (250,)}, "stop_token_ids"),
    ],
)
def test_validate_for_vocab_rejects_out_of_range_ids(kwargs: dict[str, Any], param: str) -> None:
    params = SamplingParams(**kwargs)
    with pytest.raises(InvalidRequest) as err:
        params.validate_for_vocab(100)
    assert err.value.param == param


def test_validate_for_vocab_accepts_ids_in_range() -> None:
    SamplingParams(
        logit_bias={0: 1.0, 99: -1.0}, allowed_token_ids=(0, 99), stop_token_ids=(99,)
    ).validate_for_vocab(100)
