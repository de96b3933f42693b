"""CORS: preflights answered before auth, allow-origin stamped on allowed origins only."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer

from jaxserve.engine.protocol import EngineClient
from jaxserve.http.app import build_app

NOT_AN_ENGINE = cast(EngineClient, object())  # these paths never reach the engine


def call(method: str, path: str, origins: tuple[str, ...], **kwargs: Any) -> tuple[int, Any]:
    async def run() -> tuple[int, Any]:
        app = build_app(NOT_AN_ENGINE, served_model_names=["m"], api_key="k", allowed_origins=origins)
        async with TestClient(TestServer(app)) as client:
            response = await client.request(method, path, **kwargs)
            await response.read()
            return response.status, response.headers.copy()

    return asyncio.run(run())


PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip


def test_preflight_is_answered_without_the_api_key() -> None:
    status, headers = call("OPTIONS", "/v1/chat/completions", ("https://app.example",), headers=PREFLIGHT)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "authorization, content-type"


def test_preflight_from_another_origin_is_refused() -> None:
    status, headers = call("OPTIONS", "/v1/chat/completions", ("https://other.example",), headers=PREFLIGHT)
    assert status == 400 and "Access-Control-Allow-Origin" not in headers


def test_wildcard_allows_any_origin_and_errors_carry_the_header() -> None:
    status, headers = call("GET", "/v1/models", ("*",), headers={"Origin": "https://x.example"})
    assert status == 401  # no key: the error still tells the browser it may read it
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_no_origin_header_means_no_cors_headers() -> None:
    status, headers = call("GET", "/version", ("*",))
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
