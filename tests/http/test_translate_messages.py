"""Request messages become the plain dicts chat templates render; what cannot be rendered is refused."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.errors import InvalidRequest, UnsupportedField
from jaxserve.http.protocol import ChatCompletionRequest
from jaxserve.http.translate.messages import to_template_messages


def template_messages(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    return to_template_messages(ChatCompletionRequest.model_validate({"messages": list(messages)}).messages)


def test_text_messages_of_every_supported_role_pass_through() -> None:
    assert template_messages(
        {"role": "developer", "content": "d"},
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": "ann"},
        {"role": "assistant", "content": "a"},
        {"role": "ipython", "content": "result"},
    ) == [
        {"role": "developer", "content": "d"},
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": "ann"},
        {"role": "assistant", "content": "a"},
        {"role": "ipython", "content": "result"},
    ]


def test_text_parts_are_joined_with_newlines_as_vllm_does() -> None:
    [message] = template_messages(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first"},
                "second",
                {"type": "refusal", "refusal": "third"},
                {"type": "thinking", "thinking": "fourth"},
            ],
        }
    )
    assert message == {"role": "user", "content": "first\nsecond\nthird\nfourth"}


def test_null_assistant_content_is_an_empty_string() -> None:
    assert template_messages({"role": "assistant", "content": None}) == [{"role": "assistant", "content": ""}]


def test_empty_tool_calls_list_is_not_a_tool_call() -> None:
    assert template_messages({"role": "assistant", "content": "x", "tool_calls": []}) == [
        {"role": "assistant", "content": "x"}
    ]


def test_assistant_reasoning_is_passed_under_both_names() -> None:
    [message] = template_messages({"role": "assistant", "content": "x", "reasoning": "since"})
    assert message["reasoning"] == message["reasoning_content"] == "since"


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        ({"type": "image_url", "image_url": {"url": "https://x/y.png"}}, "image_url"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}}, "input_audio"),
        ({"type": "file", "file": {"file_data": "AAAA", "filename": "a.pdf"}}, "file"),
        ({"type": "audio_url", "audio_url": {"url": "https://x/a.wav"}}, "audio_url"),
        ({"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}, "video_url"),
        ({"type": "image_embeds", "image_embeds": "b64"}, "image_embeds"),
        ({"type": "audio_embeds", "audio_embeds": "b64"}, "audio_embeds"),
        ({"image_url": "https://x/y.png"}, "image_url"),
        ({"audio_url": "https://x/a.wav"}, "audio_url"),
        ({"video_url": "https://x/v.mp4"}, "video_url"),
    ],
)
def test_non_text_parts_are_refused_naming_their_type(part: dict[str, Any], kind: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        template_messages({"role": "system", "content": "s"}, {"role": "user", "content": ["look:", part]})
    assert caught.value.status == 400
    assert caught.value.message == f"this model does not accept {kind} input"
    assert caught.value.param == "messages.1.content.1"


def test_unknown_part_types_are_refused_naming_the_type() -> None:
    with pytest.raises(InvalidRequest) as caught:
        template_messages({"role": "user", "content": [{"type": "hologram"}]})
    assert caught.value.param == "messages.0.content.0.type"
    assert "'hologram'" in caught.value.message


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}, "messages.0.function_call"),
        ({"role": "assistant", "audio": {"id": "a1"}}, "messages.0.audio"),
        (
            {"role": "ipython", "content": "x", "tools": [{"type": "function", "function": {"name": "f"}}]},
            "messages.0.tools",
        ),
        ({"role": "developer", "content": "x", "tools": [{"type": "function"}]}, "messages.0.tools"),
        ({"author": {"role": "user"}, "content": [{"text": "hi"}]}, "messages.0"),
    ],
)  # fmt: skip
def test_tool_use_and_harmony_messages_are_refused_for_now(message: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedField) as caught:
        template_messages(message)
    assert caught.value.param == param
    assert caught.value.status == 400
    assert "not supported by this server yet" in caught.value.message


def test_tool_history_is_passed_to_the_template() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    assert template_messages({"role": "assistant", "content": None, "tool_calls": [call]}) == [
        {"role": "assistant", "content": "", "tool_calls": [call]}
    ]
    assert template_messages({"role": "tool", "content": "42", "tool_call_id": "call_1"}) == [
        {"role": "tool", "content": "42", "tool_call_id": "call_1"}
    ]
    assert template_messages({"role": "function", "content": "42", "name": "f"}) == [
        {"role": "function", "content": "42", "name": "f"}
    ]
    assert template_messages({"role": "ipython", "content": "x", "tool_call_id": "c"}) == [
        {"role": "ipython", "content": "x", "tool_call_id": "c"}
    ]


def test_non_string_reasoning_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        template_messages({"role": "assistant", "content": "x", "reasoning": {"steps": 3}})
    assert caught.value.param == "messages.0.reasoning"
