"""Completions request -> engine inputs, and engine outputs -> the legacy response layout (vLLM's rules).

Pure functions called directly; the tokenizer, where one is needed, is the real default model's.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from jaxserve.engine.outputs import RequestOutput, TokenLogprob
from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.completion import CompletionRequest
from jaxserve.http.request_body import parse_body
from jaxserve.http.translate.completion import (
    CompletionInput,
    check_completion_request,
    completion_inputs,
    completion_sampling_params,
    prompt_batch,
)
from jaxserve.http.translate.completion_response import completion_logprobs, to_completion_response
from jaxserve.http.translate.logprobs import TokenRenderer
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer


def request(**fields: Any) -> CompletionRequest:
    return parse_body(CompletionRequest, {"prompt": "hi", **fields})


def refusal(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check_completion_request(request(**fields))
    return caught.value


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_path(default_model_path())


# ---------------------------------------------------------------- refusals before tokenisation


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"suffix": "!"}, "suffix"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"best_of": 3}, "best_of"),
        ({"stream": True}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"logprobs": 6}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"use_beam_search": True, "n": 11}, "n"),
        ({"use_beam_search": True, "top_k": 3}, "top_k"),
        ({"length_penalty": 2.0}, "length_penalty"),
        ({"prompt_embeds": "AAAA"}, "prompt_embeds"),
    ],
)
def test_refused_fields_are_named(fields: dict[str, Any], param: str) -> None:
    assert refusal(**fields).param == param


def test_suffix_refusal_uses_vllms_words() -> None:
    assert refusal(suffix="x").message == "'suffix' is not currently supported"


def test_stream_options_without_stream_is_vllms_error() -> None:
    assert "only be defined when `stream=True`" in refusal(stream_options={}).message


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 1, "best_of": 1},
        {"n": 128},
        {"use_beam_search": True, "n": 10, "length_penalty": 0.5, "temperature": 0.7, "seed": 3},
        {"echo": True, "max_tokens": 0},
        {"logprobs": 5},
        {"logprobs": 0},
    ],
)
def test_no_op_values_are_accepted(fields: dict[str, Any]) -> None:
    check_completion_request(request(**fields))


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("text", [("prompt", "text")]),
        (["a", "b"], [("prompt.0", "a"), ("prompt.1", "b")]),
        ([5, 6], [("prompt", [5, 6])]),
        ([[5], [6, 7]], [("prompt.0", [5]), ("prompt.1", [6, 7])]),
    ],
)
def test_prompt_forms(prompt: Any, expected: list[tuple[str, Any]]) -> None:
    assert prompt_batch(request(prompt=prompt)) == expected


@pytest.mark.parametrize("prompt", ["", [], None])
def test_empty_prompt_is_a_400(prompt: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        prompt_batch(request(prompt=prompt))
    assert caught.value.param == "prompt"


@pytest.mark.parametrize(
    ("prompt", "param"), [([1, True], "prompt.1"), ([[1], "a"], "prompt.1"), (3, "prompt")]
)
def test_malformed_prompt_errors_name_the_element(prompt: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        request(prompt=prompt)
    assert caught.value.param == param


def test_text_prompts_are_encoded_with_special_tokens_as_asked(tokenizer: Tokenizer) -> None:
    [single] = completion_inputs(request(prompt="Hello world"), tokenizer, 2048)
    assert single.prompt_token_ids == tokenizer.encode("Hello world", add_special_tokens=True)
    assert single.prompt_text is None  # no echo: no text kept
    [echoed] = completion_inputs(request(prompt="Hello world", echo=True), tokenizer, 2048)
    assert echoed.prompt_text == "Hello world"


def test_token_prompts_echo_their_decoded_text(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("Hello world", add_special_tokens=False)
    [item] = completion_inputs(request(prompt=[1, *ids], echo=True), tokenizer, 2048)
    assert item.prompt_token_ids == [1, *ids]
    assert item.prompt_text == tokenizer.decode([1, *ids], skip_special_tokens=False)


@pytest.mark.parametrize(
    ("prompt", "param"), [([5, 49152], "prompt"), ([[5], [-1]], "prompt.1"), ([[5], []], "prompt.1")]
)
def test_bad_token_prompts_are_400_naming_the_prompt(tokenizer: Tokenizer, prompt: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        completion_inputs(request(prompt=prompt), tokenizer, 2048)
    assert caught.value.param == param


def test_a_prompt_that_fills_the_context_is_400(tokenizer: Tokenizer) -> None:
    with pytest.raises(InvalidRequest) as caught:
        completion_inputs(request(prompt=[[5], [7] * 16]), tokenizer, 16)
    assert caught.value.param == "prompt.1" and caught.value.code == "context_length_exceeded"


# ---------------------------------------------------------------- sampling params


def test_max_tokens_defaults_to_16_and_is_capped_to_the_room_left() -> None:
    assert completion_sampling_params(request(), prompt_len=10, max_model_len=2048).max_tokens == 16
    assert completion_sampling_params(request(), prompt_len=2040, max_model_len=2048).max_tokens == 8
    unlimited = request(max_tokens=None)
    assert completion_sampling_params(unlimited, prompt_len=48, max_model_len=2048).max_tokens == 2000


def test_echo_with_logprobs_asks_for_prompt_logprobs() -> None:
    def prompt_logprobs(**fields: Any) -> int | None:
        return completion_sampling_params(request(**fields), prompt_len=3, max_model_len=64).prompt_logprobs

    assert prompt_logprobs(echo=True, logprobs=2) == 2
    assert prompt_logprobs(echo=True) is None
    assert prompt_logprobs(logprobs=2) is None
    assert prompt_logprobs(echo=True, logprobs=2, prompt_logprobs=4) == 4


def test_echo_with_max_tokens_zero_runs_one_step() -> None:
    params = completion_sampling_params(request(echo=True, max_tokens=0), prompt_len=3, max_model_len=64)
    assert params.max_tokens == 1


def test_sampling_fields_map_onto_sampling_params() -> None:
    params = completion_sampling_params(
        request(
            temperature=0,
            top_k=-1,
            stop="\n",
            stop_token_ids=[2],
            logit_bias={"5": 200},
            seed=3,
            min_tokens=2,
            ignore_eos=True,
            bad_words=["x"],
            allowed_token_ids=[1, 2, 3],
            logprobs=1,
        ),
        prompt_len=3,
        max_model_len=64,
    )
    assert params.greedy and params.top_k == 0 and params.stop == ("\n",) and params.stop_token_ids == (2,)
    assert params.logit_bias == {5: 100.0} and params.seed == 3 and params.min_tokens == 2
    assert params.ignore_eos and params.bad_words == ("x",) and params.allowed_token_ids == (1, 2, 3)
    assert params.logprobs == 1
    defaults = completion_sampling_params(request(), prompt_len=3, max_model_len=64)
    assert (defaults.temperature, defaults.top_p, defaults.logprobs) == (1.0, 1.0, None)


# ---------------------------------------------------------------- logprobs layout


def text_of(token_id: int) -> str:
    return {1: "A", 2: " bc", 3: "d", 4: "A"}[token_id]


def test_logprobs_layout_is_vllms() -> None:
    entries = [
        None,
        TokenLogprob(token_id=2, logprob=-0.5, rank=1, top=((2, -0.5), (3, -1.5))),
        TokenLogprob(token_id=3, logprob=-math.inf, rank=9, top=((2, -0.1),)),
    ]
    out = completion_logprobs([1, 2, 3], entries, text_of, initial_text_offset=4)
    assert out.tokens == ["A", " bc", "d"]
    assert out.text_offset == [4, 5, 8]
    assert out.token_logprobs == [None, -0.5, -9999.0]
    assert out.top_logprobs == [None, {" bc": -0.5, "d": -1.5}, {"d": -9999.0, " bc": -0.1}]


def test_a_token_keeps_its_own_logprob_when_an_alternative_has_the_same_text() -> None:
    out = completion_logprobs(
        [1], [TokenLogprob(token_id=1, logprob=-2.0, rank=2, top=((4, -0.1),))], text_of
    )
    assert out.top_logprobs == [{"A": -2.0}]


def test_logprobs_need_one_entry_per_token() -> None:
    with pytest.raises(ValueError):
        completion_logprobs([1, 2], [None], text_of)


# ---------------------------------------------------------------- response


def output(
    prompt_ids: tuple[int, ...], token_ids: tuple[int, ...], text: str, **fields: Any
) -> RequestOutput:
    return RequestOutput(
        request_id="r",
        prompt_token_ids=prompt_ids,
        text=text,
        token_ids=token_ids,
        delta_text="",
        delta_token_ids=(),
        finished=True,
        finish_reason="length",
        **fields,
    )


def respond(
    req: CompletionRequest,
    outputs: list[RequestOutput] | list[list[RequestOutput]],
    inputs: list[CompletionInput],
    tokenizer: Tokenizer,
) -> dict[str, Any]:
    """The response body; `outputs` holds one output per prompt, or each prompt's list of choices."""
    per_prompt = [o if isinstance(o, list) else [o] for o in outputs]
    response = to_completion_response(
        per_prompt,
        inputs,
        req,
        response_id="cmpl-x",
        model="m",
        created=0,
        render=TokenRenderer(tokenizer, as_token_ids=bool(req.return_tokens_as_token_ids)),
    )
    return response.model_dump(mode="json")


def test_batch_response_has_one_choice_per_prompt_and_summed_usage(tokenizer: Tokenizer) -> None:
    req = request(prompt=["a", "b"])
    inputs = completion_inputs(req, tokenizer, 2048)
    outs = [
        output(tuple(inputs[0].prompt_token_ids), (5, 6), "xy"),
        output(tuple(inputs[1].prompt_token_ids), (7,), "z"),
    ]
    body = respond(req, outs, inputs, tokenizer)
    assert body["object"] == "text_completion"
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "xy"), (1, "z")]
    prompt_tokens = len(inputs[0].prompt_token_ids) + len(inputs[1].prompt_token_ids)
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["completion_tokens"] == 3 and body["usage"]["total_tokens"] == prompt_tokens + 3


def test_n_choices_per_prompt_are_numbered_prompt_by_prompt(tokenizer: Tokenizer) -> None:
    """vLLM's order: prompt 0's n choices, then prompt 1's; each prompt's tokens counted once, every
    choice's tokens counted, and the cached prompt tokens of each prompt's first choice summed."""
    req = request(prompt=["a", "b"], n=2)
    inputs = completion_inputs(req, tokenizer, 2048)
    a, b = (tuple(item.prompt_token_ids) for item in inputs)
    outs = [
        [output(a, (5, 6), "a0", num_cached_tokens=1), output(a, (7,), "a1", num_cached_tokens=len(a))],
        [output(b, (8,), "b0", num_cached_tokens=0), output(b, (9, 9, 9), "b1", num_cached_tokens=len(b))],
    ]
    body = respond(req, outs, inputs, tokenizer)
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "a0"), (1, "a1"), (2, "b0"), (3, "b1")]
    assert body["usage"] == {
        "prompt_tokens": len(a) + len(b),
        "completion_tokens": 7,
        "total_tokens": len(a) + len(b) + 7,
        "prompt_tokens_details": {"cached_tokens": 1},
    }


def test_echo_with_logprobs_prepends_the_prompt_and_its_logprobs(tokenizer: Tokenizer) -> None:
    req = request(prompt="Hello world", echo=True, logprobs=0)
    [item] = completion_inputs(req, tokenizer, 2048)
    hello, world = item.prompt_token_ids
    bang = tokenizer.encode("!", add_special_tokens=False)[0]
    out = output(
        (hello, world),
        (bang,),
        "!",
        logprobs=(TokenLogprob(bang, -0.25, 1),),
        prompt_logprobs=(None, TokenLogprob(world, -3.0, 7)),
    )
    [choice] = respond(req, [out], [item], tokenizer)["choices"]
    assert choice["text"] == "Hello world!"
    assert choice["logprobs"]["tokens"] == ["Hello", " world", "!"]
    assert choice["logprobs"]["token_logprobs"] == [None, -3.0, -0.25]
    assert choice["logprobs"]["text_offset"] == [0, 5, 11]
    assert choice["prompt_logprobs"][0] is None and choice["prompt_logprobs"][1][str(world)]["rank"] == 7


def test_echo_with_max_tokens_zero_returns_the_prompt_alone(tokenizer: Tokenizer) -> None:
    req = request(prompt="Hello world", echo=True, max_tokens=0, logprobs=0)
    [item] = completion_inputs(req, tokenizer, 2048)
    hello, world = item.prompt_token_ids
    out = output(
        (hello, world),
        (9,),
        "?",
        logprobs=(TokenLogprob(9, -1.0, 1),),
        prompt_logprobs=(None, TokenLogprob(world, -3.0, 7)),
    )
    [choice] = respond(req, [out], [item], tokenizer)["choices"]
    assert choice["text"] == "Hello world"
    assert choice["logprobs"]["token_logprobs"] == [None, -3.0]


def test_return_token_ids_adds_both_id_lists(tokenizer: Tokenizer) -> None:
    req = request(prompt=[5, 6], return_token_ids=True)
    inputs = completion_inputs(req, tokenizer, 2048)
    [choice] = respond(req, [output((5, 6), (7, 8), "xy")], inputs, tokenizer)["choices"]
    assert choice["prompt_token_ids"] == [5, 6] and choice["token_ids"] == [7, 8]
