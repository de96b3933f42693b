"""API-key auth beyond `/v1`: an optionally guarded `/metrics`, and keys kept out of logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jaxserve.http.app import build_app
from jaxserve.server import ServerOptions
from tests.http.test_app_errors import CHAT, NOT_AN_ENGINE, assert_error_object

KEY = "sk-very-secret-0123456789"


def get(
    path: str, *, metrics_need_api_key: bool, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, str, dict[str, Any] | None]:
    async def run() -> tuple[int, str, dict[str, Any] | None]:
        app = build_app(
            NOT_AN_ENGINE, served_model_names=["smol"], api_key=KEY, metrics_need_api_key=metrics_need_api_key
        )
        async with TestClient(TestServer(app)) as client:
            response = await client.request(method, path, headers=headers or {}, json={})
            text = await response.text()
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, text, body

    return asyncio.run(run())


def test_metrics_stay_open_by_default_as_in_vllm() -> None:
    status, text, _ = get("/metrics", metrics_need_api_key=False)
    assert status == 200
    assert "vllm:num_requests_running" in text


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"bearer {KEY}", KEY])
def test_guarded_metrics_need_the_key(authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, _, body = get("/metrics", metrics_need_api_key=True, headers=headers)
    assert status == 401
    assert_error_object(body, error_type="authentication_error")


def test_guarded_metrics_answer_with_the_key_and_other_routes_stay_open() -> None:
    status, text, _ = get("/metrics", metrics_need_api_key=True, headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200 and "vllm:num_requests_running" in text
    assert get("/version", metrics_need_api_key=True)[0] == 200


def test_the_openapi_document_marks_guarded_metrics() -> None:
    for guarded in (False, True):
        status, _, document = get("/openapi.json", metrics_need_api_key=guarded)
        assert status == 200 and document is not None
        metrics_operation = document["paths"]["/metrics"]["get"]
        assert ("security" in metrics_operation) is guarded
        assert "security" in document["paths"][CHAT]["post"]


def test_no_key_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Right, wrong and malformed keys on guarded and open routes: none of them is ever logged, even at
    debug level (aiohttp's access log included)."""
    wrong = "sk-wrong-key-9876543210"
    caplog.set_level(logging.DEBUG)
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {wrong}"}, {}):
        for path, method in ((CHAT, "POST"), ("/metrics", "GET"), ("/v1/models", "GET")):
            get(path, metrics_need_api_key=True, headers=headers, method=method)
    assert caplog.records, "the requests above should have logged something"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert KEY not in logged and wrong not in logged


def test_server_options_never_show_the_key() -> None:
    options = ServerOptions(model="m", api_key=KEY)
    assert KEY not in repr(options) and KEY not in str(options)
