"""The endpoints beside chat, through the real server and model: completions, tokenize, version,
openapi and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import jaxserve
from tests.e2e.conftest import RunningServer

MODEL = "SmolLM2-135M-Instruct"
PROMPT = "The capital of France is"
OTHER_PROMPT = "One, two, three,"


def call(
    server: RunningServer, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One request (with the API key, which only /v1 routes check); the JSON body, or the text."""

    async def go() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.request(method, f"{server.base_url}{path}", json=body) as r:
                if r.content_type == "application/json":
                    return r.status, await r.json()
                return r.status, await r.text()

    return asyncio.run(go())


def complete(server: RunningServer, **fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, **fields}
    status, payload = call(server, "POST", "/v1/completions", body)
    assert status == 200, payload
    return dict(payload)


def prompt_count(server: RunningServer, prompt: str) -> int:
    status, payload = call(server, "POST", "/tokenize", {"prompt": prompt})
    assert status == 200, payload
    return int(payload["count"])


@pytest.fixture(scope="module")
def greedy(server: RunningServer) -> dict[str, Any]:
    """The plain greedy completion of PROMPT, the reference the other completion tests compare with."""
    return complete(server)


def test_completion_is_a_text_completion_with_exact_usage(
    server: RunningServer, greedy: dict[str, Any]
) -> None:
    assert greedy["object"] == "text_completion" and greedy["id"].startswith("cmpl-")
    assert greedy["model"] == MODEL
    [choice] = greedy["choices"]
    assert choice["index"] == 0 and choice["text"] and choice["logprobs"] is None
    assert choice["finish_reason"] == "length" and choice["stop_reason"] is None
    usage = greedy["usage"]
    assert usage["prompt_tokens"] == prompt_count(server, PROMPT)
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6


def test_greedy_completion_is_repeatable(server: RunningServer, greedy: dict[str, Any]) -> None:
    assert complete(server)["choices"] == greedy["choices"]


def test_echo_prepends_the_prompt(server: RunningServer, greedy: dict[str, Any]) -> None:
    echoed = complete(server, echo=True)
    assert echoed["choices"][0]["text"] == PROMPT + greedy["choices"][0]["text"]
    # The same prompt a second time: its tokens may now come from the prefix cache, which only
    # prompt_tokens_details reports.
    plain_counts = {key: value for key, value in greedy["usage"].items() if key != "prompt_tokens_details"}
    assert {
        key: value for key, value in echoed["usage"].items() if key != "prompt_tokens_details"
    } == plain_counts


def test_token_id_prompt_answers_as_its_text(server: RunningServer, greedy: dict[str, Any]) -> None:
    status, tokenized = call(server, "POST", "/tokenize", {"prompt": PROMPT})
    assert status == 200
    assert complete(server, prompt=tokenized["tokens"])["choices"] == greedy["choices"]


def test_a_batch_gets_one_choice_per_prompt_in_order(server: RunningServer, greedy: dict[str, Any]) -> None:
    other = complete(server, prompt=OTHER_PROMPT)
    batch = complete(server, prompt=[PROMPT, OTHER_PROMPT])
    assert [c["index"] for c in batch["choices"]] == [0, 1]
    assert batch["choices"][0]["text"] == greedy["choices"][0]["text"]
    assert batch["choices"][1]["text"] == other["choices"][0]["text"]
    assert (
        batch["usage"]["prompt_tokens"] == greedy["usage"]["prompt_tokens"] + other["usage"]["prompt_tokens"]
    )
    assert batch["usage"]["completion_tokens"] == 12


def test_logprobs_in_the_legacy_layout(server: RunningServer, greedy: dict[str, Any]) -> None:
    choice = complete(server, logprobs=2)["choices"][0]
    assert choice["text"] == greedy["choices"][0]["text"]
    logprobs = choice["logprobs"]
    tokens = logprobs["tokens"]
    assert len(tokens) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == 6
    assert "".join(tokens) == choice["text"]
    assert logprobs["text_offset"] == [sum(len(t) for t in tokens[:i]) for i in range(6)]
    for token, logprob, top in zip(tokens, logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True):
        assert logprob <= 0.0
        assert top[token] == logprob and 2 <= len(top) <= 3
        assert logprob == max(top.values())  # greedy: the chosen token is the most likely one


def test_echo_with_logprobs_covers_the_prompt(server: RunningServer) -> None:
    reply = complete(server, echo=True, logprobs=1, max_tokens=2)
    logprobs = reply["choices"][0]["logprobs"]
    n = reply["usage"]["prompt_tokens"] + 2
    assert len(logprobs["tokens"]) == n and "".join(logprobs["tokens"]) == reply["choices"][0]["text"]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert all(lp is not None for lp in logprobs["token_logprobs"][1:])


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"suffix": "!"}, "suffix"),
        ({"n": 129}, "n"),
        ({"stream": True}, "stream"),
        ({"logprobs": 6}, "logprobs"),
        ({"prompt": [3, 10**9]}, "prompt"),
        ({"prompt": ""}, "prompt"),
    ],
    ids=["suffix", "n", "stream", "logprobs", "out-of-vocab", "empty"],
)
def test_refused_completions_are_400(server: RunningServer, fields: dict[str, Any], param: str) -> None:
    status, payload = call(server, "POST", "/v1/completions", {"model": MODEL, "prompt": PROMPT, **fields})
    assert status == 400 and payload["error"]["param"] == param


def test_unknown_model_is_404(server: RunningServer) -> None:
    status, payload = call(server, "POST", "/v1/completions", {"model": "nope", "prompt": PROMPT})
    assert status == 404 and payload["error"]["code"] == "model_not_found"


def test_tokenize_a_chat_counts_what_chat_completions_bills(server: RunningServer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]
    status, tokenized = call(server, "POST", "/tokenize", {"model": MODEL, "messages": messages})
    assert status == 200
    status, chat = call(server, "POST", "/v1/chat/completions", {"messages": messages, "max_tokens": 1})
    assert status == 200
    assert tokenized["count"] == len(tokenized["tokens"]) == chat["usage"]["prompt_tokens"]
    assert tokenized["max_model_len"] == 2048 and tokenized["token_strs"] is None


def test_detokenize_inverts_tokenize(server: RunningServer) -> None:
    text = "Héllo, wörld! 123 <b>tags</b>\n  spaced"
    status, tokenized = call(server, "POST", "/tokenize", {"prompt": text, "return_token_strs": True})
    assert status == 200 and len(tokenized["token_strs"]) == tokenized["count"]
    status, detokenized = call(server, "POST", "/detokenize", {"tokens": tokenized["tokens"]})
    assert status == 200 and detokenized == {"prompt": text}
    status, error = call(server, "POST", "/detokenize", {"tokens": [1, -1]})
    assert status == 400 and error["error"]["param"] == "tokens"


def test_version(server: RunningServer) -> None:
    assert call(server, "GET", "/version") == (200, {"version": jaxserve.__version__})


def test_openapi_describes_the_routes_with_their_schemas(server: RunningServer) -> None:
    status, document = call(server, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    for path, name in (("/v1/chat/completions", "ChatCompletion"), ("/v1/completions", "Completion")):
        operation = document["paths"][path]["post"]
        request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        response_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert request_ref == f"#/components/schemas/{name}Request"
        assert response_ref == f"#/components/schemas/{name}Response"
        assert operation["security"] == [{"bearerAuth": []}]
    assert "prompt" in schemas["CompletionRequest"]["properties"]
    assert "messages" in schemas["ChatCompletionRequest"]["required"]


def scrape(server: RunningServer) -> dict[str, float]:
    """Every sample of /metrics for this model, by name (label sets other than model/engine by `le`)."""
    status, text = call(server, "GET", "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model_name") == MODEL and "le" not in sample.labels:
                samples[sample.name] = sample.value
    return samples


def test_metrics_count_exactly_what_usage_reports(server: RunningServer) -> None:
    before = scrape(server)
    completion = complete(server, max_tokens=4)
    status, chat = call(
        server,
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
    )
    assert status == 200
    after = scrape(server)

    def grew(name: str) -> float:
        return after[name] - before[name]

    usages = [completion["usage"], chat["usage"]]
    assert grew("vllm:prompt_tokens_total") == sum(u["prompt_tokens"] for u in usages)
    assert grew("vllm:generation_tokens_total") == sum(u["completion_tokens"] for u in usages)
    assert grew("vllm:e2e_request_latency_seconds_count") == 2
    assert grew("vllm:time_to_first_token_seconds_count") == 2
    generated = sum(u["completion_tokens"] for u in usages)
    assert 1 <= grew("vllm:inter_token_latency_seconds_count") <= generated - 2
    assert grew("vllm:e2e_request_latency_seconds_sum") > 0
    assert grew("vllm:prefix_cache_queries_total") == sum(u["prompt_tokens"] for u in usages)
    cached = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for u in usages)
    assert grew("vllm:prefix_cache_hits_total") == cached
    assert after["vllm:num_requests_running"] == 0 and after["vllm:num_requests_waiting"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0
