"""Request size limits: each list or map field over its limit is a 400 naming it, before any engine work
(the app's engine here is a bare object, so reaching it would be a 500)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.http.limits import REQUEST_LIMITS, check_chat_limits
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.tokenize import TokenizeChatRequest
from jaxserve.http.routes.tokenize import tokenize_ids
from jaxserve.modeling.tokenizer import Tokenizer
from tests.http.test_app_errors import CHAT, MESSAGES, assert_error_object, call

LIMITS = REQUEST_LIMITS
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

OVER_THE_LIMIT: list[tuple[dict[str, Any], str]] = [
    ({"stop": [f"s{i}" for i in range(LIMITS.stop + 1)]}, "stop"),
    ({"stop": "x" * (LIMITS.stop_string_chars + 1)}, "stop"),
    ({"stop_token_ids": [1] * (LIMITS.stop_token_ids + 1)}, "stop_token_ids"),
    ({"logit_bias": {str(i): 1.0 for i in range(LIMITS.logit_bias + 1)}}, "logit_bias"),
    ({"bad_words": ["w"] * (LIMITS.bad_words + 1)}, "bad_words"),
    ({"allowed_token_ids": [1] * (LIMITS.allowed_token_ids + 1)}, "allowed_token_ids"),
]


@pytest.mark.parametrize(("fields", "param"), OVER_THE_LIMIT)
@pytest.mark.parametrize("path", [CHAT, "/v1/completions"])
def test_fields_over_their_limit_are_a_400_naming_them(fields: dict[str, Any], param: str, path: str) -> None:
    prompt: dict[str, Any] = {"messages": MESSAGES} if path == CHAT else {"prompt": "hi"}
    status, _, body = call("POST", path, json={**prompt, **fields})
    assert status == 400
    message = assert_error_object(body, error_type="invalid_request_error", param=param)
    assert "at most" in message


def test_too_many_messages_is_a_400() -> None:
    messages = [{"role": "user", "content": "hi"}] * (LIMITS.messages + 1)
    status, _, body = call("POST", CHAT, json={"messages": messages})
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param="messages")


def test_too_many_tools_is_a_400() -> None:
    tools = [TOOL] * (LIMITS.tools + 1)
    status, _, body = call("POST", CHAT, json={"messages": MESSAGES, "tools": tools})
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param="tools")


def test_tokenize_applies_the_chat_limits() -> None:
    """Checked before the tokenizer is touched (so a bare object stands in for it)."""
    messages = [{"role": "user", "content": "hi"}] * (LIMITS.messages + 1)
    request = TokenizeChatRequest.model_validate({"messages": messages})
    with pytest.raises(InvalidRequest) as caught:
        tokenize_ids(request, cast(Tokenizer, object()))
    assert caught.value.param == "messages"


@pytest.mark.parametrize(
    ("prompts", "n"), [(LIMITS.prompts + 1, 1), (LIMITS.prompts // 2 + 1, 2), (2, LIMITS.prompts)]
)
def test_completions_cap_prompts_times_n(prompts: int, n: int) -> None:
    status, _, body = call("POST", "/v1/completions", json={"prompt": ["hi"] * prompts, "n": n, "seed": 1})
    assert status == 400
    assert_error_object(body, error_type="invalid_request_error", param="prompt")


def test_a_request_at_every_limit_passes_the_limit_check() -> None:
    """Exactly at each limit is allowed."""
    request = ChatCompletionRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "hi"}] * LIMITS.messages,
            "tools": [TOOL] * LIMITS.tools,
            "stop": ["x" * LIMITS.stop_string_chars] * LIMITS.stop,
            "stop_token_ids": [1] * LIMITS.stop_token_ids,
            "logit_bias": {str(i): 1.0 for i in range(LIMITS.logit_bias)},
            "bad_words": ["w"] * LIMITS.bad_words,
        }
    )
    check_chat_limits(request)  # raises on any limit exceeded
