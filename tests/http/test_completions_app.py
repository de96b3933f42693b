"""The companion routes of the real application, for requests that never reach an engine.

As in test_app_errors, the app is built around a bare object in place of the engine: a handler that
reached for it would fail with a 500, so these pin that refusals happen before any engine work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

import jaxserve
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.protocol import EngineClient
from jaxserve.http.app import ROUTES, build_app
from jaxserve.http.metrics import METRICS, ServingMetrics

NOT_AN_ENGINE = cast(EngineClient, object())


def call(
    method: str, path: str, *, api_key: str | None = None, **kwargs: Any
) -> tuple[int, str, dict[str, Any] | str]:
    """One request to a freshly built app: status, content type, and the JSON (or text) body."""

    async def run() -> tuple[int, str, dict[str, Any] | str]:
        app = build_app(NOT_AN_ENGINE, served_model_names=["smol"], api_key=api_key)
        async with TestClient(TestServer(app)) as client:
            response = await client.request(method, path, **kwargs)
            if response.content_type == "application/json":
                return response.status, response.content_type, await response.json()
            return response.status, response.content_type, await response.text()

    return asyncio.run(run())


def error_param(body: dict[str, Any] | str) -> str | None:
    assert isinstance(body, dict) and set(body) == {"error"}
    return cast(str | None, body["error"]["param"])


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"prompt": "hi", "suffix": "!"}, 400, "suffix"),
        ({"prompt": "hi", "n": 129}, 400, "n"),
        ({"prompt": "hi", "stream": True}, 400, "stream"),
        ({"prompt": [1, "a"]}, 400, "prompt.1"),
        ({"prompt": "hi", "model": "gpt-4"}, 404, "model"),
    ],
)
def test_completion_refusals_come_before_the_engine(payload: dict[str, Any], status: int, param: str) -> None:
    got, _, body = call("POST", "/v1/completions", json=payload)
    assert got == status and error_param(body) == param


def test_completions_need_the_api_key_when_one_is_set() -> None:
    status, _, _ = call("POST", "/v1/completions", api_key="secret", json={"prompt": "hi"})
    assert status == 401


@pytest.mark.parametrize(
    ("path", "payload"),
    [("/tokenize", {"prompt": "hi", "model": "x"}), ("/detokenize", {"tokens": [], "model": "x"})],
)
def test_tokenizer_routes_check_the_model(path: str, payload: dict[str, Any]) -> None:
    status, _, body = call("POST", path, json=payload)
    assert status == 404 and error_param(body) == "model"


def test_version_is_the_package_version() -> None:
    assert call("GET", "/version") == (200, "application/json", {"version": jaxserve.__version__})


def test_openapi_lists_every_route_of_the_table() -> None:
    status, _, document = call("GET", "/openapi.json")
    assert status == 200 and isinstance(document, dict)
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented == {(route.method, route.path) for route in ROUTES}
    assert "securitySchemes" not in document["components"]  # built without an API key
    status, _, secured = call("GET", "/openapi.json", api_key="secret")  # open: it is not under /v1
    assert status == 200 and isinstance(secured, dict)
    assert secured["paths"]["/v1/completions"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in secured["paths"]["/tokenize"]["post"]


def test_metrics_export_vllms_series_before_any_request() -> None:
    status, content_type, text = call("GET", "/metrics")
    assert status == 200 and content_type == "text/plain" and isinstance(text, str)
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "le" not in sample.labels
    }
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
    ):
        assert samples[name] == 0, name


def test_each_app_has_its_own_registry() -> None:
    first = build_app(NOT_AN_ENGINE, served_model_names=["a"])
    second = build_app(NOT_AN_ENGINE, served_model_names=["a"])
    first[METRICS].request_finished(
        prompt_tokens=3, generation_tokens=2, ttft=0.1, inter_token_latencies=[0.01], e2e=0.2
    )
    assert (
        first[METRICS].registry.get_sample_value(
            "vllm:prompt_tokens_total", {"model_name": "a", "engine": "0"}
        )
        == 3
    )
    assert (
        second[METRICS].registry.get_sample_value(
            "vllm:prompt_tokens_total", {"model_name": "a", "engine": "0"}
        )
        == 0
    )


def snapshot(tokens: tuple[int, ...], *, finished: bool) -> RequestOutput:
    return RequestOutput(
        request_id="r",
        prompt_token_ids=(1, 2, 3, 4),
        text="",
        token_ids=tokens,
        delta_text="",
        delta_token_ids=tokens[-1:],
        finished=finished,
        finish_reason="length" if finished else None,
    )


async def three_tokens() -> AsyncIterator[RequestOutput]:
    for count in (1, 2, 3):
        await asyncio.sleep(0.01)
        yield snapshot(tuple(range(count)), finished=count == 3)


def sample(metrics: ServingMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, {"model_name": "m", "engine": "0"})
    assert value is not None
    return value


def test_track_records_a_finished_request_as_the_outputs_pass() -> None:
    metrics = ServingMetrics(model_name="m", engine=object())

    async def consume() -> list[RequestOutput]:
        return [output async for output in metrics.track(three_tokens())]

    assert [o.token_ids for o in asyncio.run(consume())] == [(0,), (0, 1), (0, 1, 2)]
    assert sample(metrics, "vllm:prompt_tokens_total") == 4
    assert sample(metrics, "vllm:generation_tokens_total") == 3
    assert sample(metrics, "vllm:time_to_first_token_seconds_count") == 1
    assert sample(metrics, "vllm:inter_token_latency_seconds_count") == 2
    assert sample(metrics, "vllm:e2e_request_latency_seconds_count") == 1
    ttft = sample(metrics, "vllm:time_to_first_token_seconds_sum")
    itl = sample(metrics, "vllm:inter_token_latency_seconds_sum")
    assert 0.01 <= ttft and 0.02 <= itl
    assert sample(metrics, "vllm:e2e_request_latency_seconds_sum") >= ttft + itl


def test_track_counts_an_abandoned_request_without_an_e2e_sample() -> None:
    metrics = ServingMetrics(model_name="m", engine=object())
    closed = []

    async def source() -> AsyncIterator[RequestOutput]:
        try:
            async for output in three_tokens():
                yield output
        finally:
            closed.append(True)

    async def take_one() -> None:
        outputs = metrics.track(source())
        await anext(outputs)
        await outputs.aclose()  # type: ignore[attr-defined]

    asyncio.run(take_one())
    assert closed == [True]  # closing the tracker closes the engine's iterator (which aborts it)
    assert sample(metrics, "vllm:generation_tokens_total") == 1
    assert sample(metrics, "vllm:time_to_first_token_seconds_count") == 1
    assert sample(metrics, "vllm:e2e_request_latency_seconds_count") == 0
