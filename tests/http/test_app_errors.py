"""Error objects from the real application, for requests that fail before any engine call.

The app is built with an engine argument these paths never touch (a bare object: if a handler reached for
the engine, the test would see a 500), so no stand-in for the model is involved.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jaxserve.engine.protocol import EngineClient
from jaxserve.http.app import build_app

NOT_AN_ENGINE = cast(EngineClient, object())
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
JSON = {"Content-Type": "application/json"}


def call(
    method: str, path: str, *, api_key: str | None = None, **kwargs: Any
) -> tuple[int, dict[str, str], dict[str, Any] | None]:
    """Send one request to a freshly built app; return status, headers and the JSON body (if any)."""

    async def run() -> tuple[int, dict[str, str], dict[str, Any] | None]:
        app = build_app(NOT_AN_ENGINE, served_model_names=["smol", "smol-alias"], api_key=api_key)
        async with TestClient(TestServer(app)) as client:
            response = await client.request(method, path, **kwargs)
            raw = await response.read()
            return response.status, dict(response.headers), json.loads(raw) if raw else None

    return asyncio.run(run())


def assert_error_object(body: dict[str, Any] | None, *, error_type: str, param: str | None = None) -> str:
    assert body is not None and set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


def test_malformed_json_is_a_400() -> None:
    status, _, body = call("POST", CHAT, data=b'{"messages": [', headers={"Content-Type": "application/json"})
    assert status == 400
    assert "not valid JSON" in assert_error_object(body, error_type="invalid_request_error")


def test_deeply_nested_json_is_a_400_not_a_recursion_crash() -> None:
    status, _, body = call("POST", CHAT, data=b"[" * 100_000 + b"]" * 100_000, headers=JSON)
    assert status == 400
    assert "nested too deeply" in assert_error_object(body, error_type="invalid_request_error")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_not_json_numbers(token: str) -> None:
    payload = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": ' + token.encode() + b"}"
    status, _, body = call("POST", CHAT, data=payload, headers=JSON)
    assert status == 400
    assert f"{token} is not a JSON number" in assert_error_object(body, error_type="invalid_request_error")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_body_that_is_not_declared_json_is_a_400(content_type: str) -> None:
    payload = json.dumps({"messages": MESSAGES}).encode()
    status, _, body = call("POST", CHAT, data=payload, headers={"Content-Type": content_type})
    assert status == 400
    assert "Content-Type must be application/json" in assert_error_object(
        body, error_type="invalid_request_error"
    )


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8", "application/vnd.x+json"])
def test_json_or_an_absent_content_type_is_read_as_json(content_type: str | None) -> None:
    # A bare object as engine: a body read as JSON gets as far as the (missing) messages field.
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, _, body = call("POST", CHAT, data=b"{}", headers=headers, skip_auto_headers=["Content-Type"])
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param="messages")


def test_a_lone_surrogate_escape_is_a_400_naming_the_field() -> None:
    payload = b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}'
    status, _, body = call("POST", CHAT, data=payload, headers=JSON)
    assert status == 400
    message = assert_error_object(body, error_type="invalid_request_error", param="messages.0.content")
    assert "unpaired UTF-16 surrogate" in message


def test_an_escaped_surrogate_pair_is_an_ordinary_character() -> None:
    # The emoji passes the surrogate check; the request then fails only for its missing messages.
    status, _, body = call("POST", CHAT, data=b'{"model": "\\ud83d\\ude00"}', headers=JSON)
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param="messages")


def test_a_body_that_does_not_decode_with_its_content_encoding_is_a_400() -> None:
    headers = {**JSON, "Content-Encoding": "gzip"}
    status, _, body = call("POST", CHAT, data=b"this is not gzip", headers=headers)
    assert status == 400
    assert "could not be read" in assert_error_object(body, error_type="invalid_request_error")


def test_invalid_utf8_is_a_400() -> None:
    status, _, body = call("POST", CHAT, data=b'{"model": "\xff"}', headers=JSON)
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error")


@pytest.mark.parametrize(
    ("payload", "kind"), [([], "an array"), ("hi", "a string"), (3, "a number"), (None, "null")]
)
def test_a_body_that_is_not_an_object_is_a_400(payload: Any, kind: str) -> None:
    status, _, body = call("POST", CHAT, data=json.dumps(payload).encode(), headers=JSON)
    assert status == 400
    assert kind in assert_error_object(body, error_type="invalid_request_error")


def test_schema_errors_are_400_with_the_dotted_param() -> None:
    status, _, body = call("POST", CHAT, json={"messages": [{"role": "user", "content": [{"type": "text"}]}]})
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param="messages.0.content.0.text")


def test_unknown_model_is_a_404() -> None:
    status, _, body = call("POST", CHAT, json={"model": "gpt-4", "messages": MESSAGES})
    assert status == 404
    assert "gpt-4" in assert_error_object(body, error_type="invalid_request_error", param="model")
    assert body is not None and body["error"]["code"] == "model_not_found"


def test_unsupported_field_is_a_400_naming_it() -> None:
    status, _, body = call(
        "POST", CHAT, json={"model": "smol-alias", "messages": MESSAGES, "logits_processors": ["m.P"]}
    )
    assert status == 400
    message = assert_error_object(body, error_type="invalid_request_error", param="logits_processors")
    assert message.startswith("'logits_processors' names server-side Python logits processors")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"use_beam_search": True, "n": 11}, "n"),
        ({"use_beam_search": True, "top_p": 0.9}, "top_p"),
        ({"use_beam_search": True, "top_k": 5}, "top_k"),
        ({"use_beam_search": True, "min_p": 0.1}, "min_p"),
        ({"use_beam_search": True, "presence_penalty": 0.5}, "presence_penalty"),
        ({"use_beam_search": True, "frequency_penalty": 0.5}, "frequency_penalty"),
        ({"use_beam_search": True, "repetition_penalty": 1.2}, "repetition_penalty"),
        ({"use_beam_search": True, "logit_bias": {"5": 1}}, "logit_bias"),
        ({"use_beam_search": True, "allowed_token_ids": [5]}, "allowed_token_ids"),
        ({"use_beam_search": True, "bad_words": ["x"]}, "bad_words"),
        ({"length_penalty": 0.5}, "length_penalty"),
        ({"priority": 1}, "priority"),
        ({"priority": -3}, "priority"),
        ({"cache_salt": ""}, "cache_salt"),
    ],
)
@pytest.mark.parametrize("path", [CHAT, "/v1/completions"])
def test_choice_beam_and_priority_refusals_come_before_the_engine(
    fields: dict[str, Any], param: str, path: str
) -> None:
    """n out of range, sampling fields under beam search, length_penalty without it, and a priority under
    the (stand-in's default) FCFS policy are all refused before anything is tokenised."""
    prompt: dict[str, Any] = {"messages": MESSAGES} if path == CHAT else {"prompt": "hi"}
    status, _, body = call("POST", path, json={**prompt, **fields})
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param=param)


def test_non_text_content_is_a_400_naming_the_input_type() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    status, _, body = call(
        "POST", CHAT, json={"messages": [{"role": "user", "content": ["what is this?", image]}]}
    )
    assert status == 400
    message = assert_error_object(body, error_type="invalid_request_error", param="messages.0.content.1")
    assert message == "this model does not accept image_url input"


def test_continue_final_message_with_generation_prompt_is_a_400() -> None:
    status, _, body = call("POST", CHAT, json={"messages": MESSAGES, "continue_final_message": True})
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param="continue_final_message")


def test_unknown_route_is_a_404() -> None:
    status, _, body = call("POST", "/v1/completions-of-the-future", json={})
    assert status == 404
    assert "Invalid URL" in assert_error_object(body, error_type="invalid_request_error")


def test_wrong_method_is_a_405_with_allow() -> None:
    status, headers, body = call("GET", CHAT)
    assert status == 405
    assert headers["Allow"] == "POST"
    assert_error_object(body, error_type="invalid_request_error")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "secret", "Bearer secret2", "bearer secret"])
@pytest.mark.parametrize(("method", "path"), [("POST", CHAT), ("GET", "/v1/models"), ("GET", "/v1/nope")])
def test_v1_needs_the_api_key(authorization: str | None, method: str, path: str) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, response_headers, body = call(method, path, api_key="secret", headers=headers, json={})
    assert status == 401
    assert response_headers["WWW-Authenticate"] == "Bearer"
    assert_error_object(body, error_type="authentication_error")


def test_the_right_api_key_gets_through_to_the_handler() -> None:
    status, _, body = call(
        "POST",
        CHAT,
        api_key="secret",
        headers={"Authorization": "Bearer secret"},
        json={"model": "x", "messages": []},
    )
    assert status == 404
    assert_error_object(body, error_type="invalid_request_error", param="model")


def test_paths_outside_v1_need_no_key() -> None:
    status, _, body = call("GET", "/metrics-someday", api_key="secret")
    assert status == 404
    assert_error_object(body, error_type="invalid_request_error")


def test_an_empty_api_key_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError):
        build_app(NOT_AN_ENGINE, served_model_names=["smol"], api_key="")


def test_at_least_one_served_name_is_required() -> None:
    with pytest.raises(ValueError):
        build_app(NOT_AN_ENGINE, served_model_names=[])
