"""Every sampling parameter through HTTP with the real default model, checked by its effect."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from tests.e2e.conftest import RunningServer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_path(default_model_path())


def chat(server: RunningServer, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0, **fields}

    async def go() -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as r:
                return r.status, await r.json()

    return asyncio.run(go())


def ok(server: RunningServer, **fields: Any) -> dict[str, Any]:
    status, body = chat(server, **fields)
    assert status == 200, body
    return body


def token_ids(body: dict[str, Any]) -> list[int]:
    """The generated ids, read from logprobs rendered as token_id:N."""
    return [int(entry["token"].split(":")[1]) for entry in body["choices"][0]["logprobs"]["content"]]


def ids_of(server: RunningServer, **fields: Any) -> list[int]:
    return token_ids(ok(server, logprobs=True, return_tokens_as_token_ids=True, **fields))


def test_top_k_one_equals_greedy(server: RunningServer) -> None:
    greedy = ok(server)["choices"][0]["message"]["content"]
    sampled = ok(server, temperature=1.0, top_k=1, seed=3)["choices"][0]["message"]["content"]
    assert sampled == greedy


def test_logit_bias_plus_100_forces_a_token(server: RunningServer) -> None:
    forced = 1234
    assert ids_of(server, logit_bias={str(forced): 100}, max_tokens=5) == [forced] * 5


def test_logit_bias_minus_100_bans_a_token(server: RunningServer) -> None:
    first = ids_of(server)[0]
    assert first not in ids_of(server, logit_bias={str(first): -100})


def test_allowed_token_ids_restrict_the_output(server: RunningServer, tokenizer: Tokenizer) -> None:
    allowed = tokenizer.encode(" yes no maybe", add_special_tokens=False)
    ids = ids_of(server, allowed_token_ids=allowed, max_tokens=6, temperature=1.0, seed=11)
    assert ids and set(ids) <= set(allowed)


def test_bad_words_are_never_generated(server: RunningServer) -> None:
    assert "Paris" in ok(server)["choices"][0]["message"]["content"]
    assert "Paris" not in ok(server, bad_words=["Paris"])["choices"][0]["message"]["content"]


def test_min_tokens_suppresses_eos(server: RunningServer) -> None:
    short = ok(server, max_tokens=50)
    assert short["choices"][0]["finish_reason"] == "stop"
    n = short["usage"]["completion_tokens"]
    longer = ok(server, max_tokens=50, min_tokens=n + 5)
    assert longer["usage"]["completion_tokens"] >= n + 5


def test_penalties_break_up_repetition(server: RunningServer) -> None:
    """Greedy decoding of a repetitive prompt loops on a few tokens; each penalty spreads the output."""
    ask = [{"role": "user", "content": "Write 'la' forty times: la la la la la la la la"}]

    def distinct(**penalty: float) -> int:
        return len(set(ids_of(server, messages=ask, max_tokens=40, ignore_eos=True, **penalty)))

    plain = distinct()
    assert distinct(frequency_penalty=2.0) > plain
    assert distinct(repetition_penalty=2.0) > plain


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty", "repetition_penalty"])
def test_each_penalty_changes_free_text(server: RunningServer, penalty: str) -> None:
    ask = [{"role": "user", "content": "Tell me about cats and dogs."}]
    plain = ids_of(server, messages=ask, max_tokens=40, ignore_eos=True)
    value = 2.0 if penalty != "repetition_penalty" else 1.5
    assert ids_of(server, messages=ask, max_tokens=40, ignore_eos=True, **{penalty: value}) != plain


def test_logprobs_are_sorted_and_consistent_with_greedy(server: RunningServer) -> None:
    body = ok(server, logprobs=True, top_logprobs=5)
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    for entry in content:
        top = entry["top_logprobs"]
        assert len(top) == 5
        values = [t["logprob"] for t in top]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert top[0]["token"] == entry["token"] and top[0]["logprob"] == pytest.approx(entry["logprob"])
        assert bytes(entry["bytes"]).decode("utf-8", errors="replace") is not None


def test_prompt_logprobs_align_with_the_prompt(server: RunningServer, tokenizer: Tokenizer) -> None:
    body = ok(server, prompt_logprobs=2, max_tokens=1)
    prompt_ids = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    entries = body["prompt_logprobs"]
    assert len(entries) == len(prompt_ids) == body["usage"]["prompt_tokens"]
    assert entries[0] is None
    for position, entry in enumerate(entries[1:], start=1):
        actual = entry[str(prompt_ids[position])]  # the prompt token itself is always there
        assert actual["logprob"] <= 0 and actual["rank"] >= 1
        ranks = {v["rank"] for v in entry.values()}
        assert {1, 2} <= ranks and len(entry) == (2 if actual["rank"] <= 2 else 3)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"99999999": 5}}, "logit_bias"),
        ({"allowed_token_ids": [99999999]}, "allowed_token_ids"),
        ({"allowed_token_ids": []}, "allowed_token_ids"),
        ({"min_tokens": -1}, "min_tokens"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
def test_out_of_range_values_are_400_naming_the_field(
    server: RunningServer, fields: dict, param: str
) -> None:
    status, body = chat(server, **fields)
    assert status == 400, body
    assert body["error"]["param"] == param
