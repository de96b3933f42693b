"""Malformed HTTP against the real server, written byte by byte (an HTTP client would normalise it away).

For every case: an answer that is not a 5xx (a 4xx, or the connection closed without an answer where no
request was complete), the OpenAI error object whenever the answer is JSON, and afterwards the server
still serves a normal request. Requests that aiohttp's HTTP parser rejects before the application sees
them (an invalid request line, an oversized header, bad chunked framing) are answered by aiohttp itself
with a plain-text 400: the error object cannot be produced there without replacing aiohttp's parser.
Twenty bad requests sent beside a greedy stream must leave its text exactly as it is alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import pytest

from tests.e2e.conftest import RunningServer
from tests.e2e.raw_http import RawResponse, exchange, request_bytes
from tests.http.response_checks import check_error_object, check_event_stream

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
VALID = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).encode()
OVER_LIMIT = 32 * 1024 * 1024 + 1  # the server's default --max-request-body, plus one byte


@dataclass(frozen=True)
class Case:
    """One malformed request: its bytes (given the API key), whether to half-close after sending, and
    whether aiohttp's parser (not the application) answers it."""

    name: str
    build: Callable[[str], bytes]
    close_write: bool = False
    parser_answers: bool = False
    may_close_without_answer: bool = False


def post(body: bytes, content_type: str | None = "application/json", **extra: str) -> Callable[[str], bytes]:
    def build(api_key: str) -> bytes:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Length": str(len(body)), **extra}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return request_bytes("POST", CHAT, headers, body)

    return build


def with_headers(headers: list[tuple[str, str]], body: bytes = b"{") -> Callable[[str], bytes]:
    def build(api_key: str) -> bytes:
        base = [("Authorization", f"Bearer {api_key}"), ("Content-Type", "application/json")]
        return request_bytes("POST", CHAT, base + headers + [("Content-Length", str(len(body)))], body)

    return build


def truncated(api_key: str) -> bytes:
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Content-Length": "1000",
    }
    return request_bytes("POST", CHAT, headers, VALID[:20])


def bad_chunks(api_key: str) -> bytes:
    headers = {"Authorization": f"Bearer {api_key}", "Transfer-Encoding": "chunked"}
    return request_bytes("POST", CHAT, headers, b"zz\r\n{}\r\n0\r\n\r\n")


def over_limit(api_key: str) -> bytes:
    return post(b" " * OVER_LIMIT)(api_key)


CASES = [
    Case("invalid_json", post(b'{"messages": [{"role": "user", "content": "Hi"}')),
    Case("nan_and_infinity", post(b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}')),
    Case("infinity", post(b'{"messages": [{"role": "user", "content": "Hi"}], "top_p": -Infinity}')),
    Case("not_an_object", post(b'[{"role": "user", "content": "Hi"}]')),
    Case("text_plain", post(VALID, "text/plain")),
    Case("form_urlencoded", post(b"messages=Hi&max_tokens=2", "application/x-www-form-urlencoded")),
    Case("multipart", post(b'--x\r\nContent-Disposition: form-data; name="m"\r\n\r\nHi\r\n--x--\r\n', "multipart/form-data; boundary=x")),
    Case("invalid_utf8", post(b'{"messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}')),
    Case("lone_surrogate", post(b'{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 2}')),
    Case("deep_nesting", post(b"[" * 100_000 + b"]" * 100_000)),
    Case("truncated_body", truncated, close_write=True, may_close_without_answer=True),
    Case("over_the_size_limit", over_limit),
    Case("huge_header_value", with_headers([("X-Big", "a" * 100_000)]), parser_answers=True),
    Case("too_many_headers", with_headers([(f"X-H{i}", "v") for i in range(20_000)]), parser_answers=True),
    Case("invalid_request_line", lambda _key: b"GARBAGE / NOT-HTTP\r\n\r\n", parser_answers=True),
    Case("bad_chunked_encoding", bad_chunks, parser_answers=True),
    Case("gzip_garbage", post(b"this is not gzip", **{"Content-Encoding": "gzip"})),
]  # fmt: skip


def check_rejected(case: Case, response: RawResponse) -> None:
    """A 4xx (the error object if JSON), or for a request never completed, possibly no answer at all."""
    if response.status is None:
        assert case.may_close_without_answer, f"{case.name}: the server closed without answering"
        return
    assert 400 <= response.status < 500, (case.name, response.status, response.body[:300])
    if response.headers.get("content-type", "").startswith("application/json"):
        check_error_object(response.json())
    else:
        assert case.parser_answers, (case.name, response.headers, response.body[:300])


async def chat(server: RunningServer, body: dict[str, object]) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}{CHAT}", json=body, headers=headers) as response:
            return response.status, await response.read()


GREEDY_STREAM = {
    "messages": [{"role": "user", "content": "Count from one to ten in words."}],
    "max_tokens": 24,
    "temperature": 0,
    "stream": True,
}


async def streamed_text(server: RunningServer) -> str:
    status, raw = await chat(server, GREEDY_STREAM)
    assert status == 200, raw[:300]
    events = check_event_stream(raw)
    return "".join(
        choice["delta"].get("content") or "" for event in events for choice in event.get("choices", [])
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_request_is_refused_and_the_server_keeps_serving(server: RunningServer, case: Case) -> None:
    async def go() -> None:
        response = await exchange(server.base_url, case.build(server.api_key), close_write=case.close_write)
        check_rejected(case, response)
        if case.name == "over_the_size_limit":
            assert response.status == 413
        status, raw = await chat(server, json.loads(VALID))
        assert status == 200, raw[:300]

    asyncio.run(go())


def test_twenty_malformed_requests_do_not_change_a_greedy_stream_beside_them(server: RunningServer) -> None:
    async def go() -> None:
        alone = await streamed_text(server)
        assert alone
        bad = [CASES[i % len(CASES)] for i in range(20)]
        stream = asyncio.create_task(streamed_text(server))
        responses = await asyncio.gather(
            *(
                exchange(server.base_url, case.build(server.api_key), close_write=case.close_write)
                for case in bad
            )
        )
        for case, response in zip(bad, responses, strict=True):
            check_rejected(case, response)
        assert await stream == alone

    asyncio.run(go())
