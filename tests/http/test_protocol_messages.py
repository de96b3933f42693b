"""Every spec message type and content part parses into its own model, chosen by role / type."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from jaxserve.errors import InvalidRequest
from jaxserve.http.errors import invalid_request_from_validation
from jaxserve.http.protocol import ChatCompletionMessageParam, ChatCompletionRequest
from jaxserve.http.protocol import content as c
from jaxserve.http.protocol import messages as m
from jaxserve.http.protocol import tools as t

MESSAGE = TypeAdapter(ChatCompletionMessageParam)
PART = TypeAdapter(c.ChatCompletionContentPartParam)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"role": "developer", "content": "be brief", "name": "ops"}, m.ChatCompletionDeveloperMessageParam),
        (
            {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            m.ChatCompletionSystemMessageParam,
        ),
        ({"role": "user", "content": "hi"}, m.ChatCompletionUserMessageParam),
        ({"role": "assistant", "content": None}, m.ChatCompletionAssistantMessageParam),
        ({"role": "assistant"}, m.ChatCompletionAssistantMessageParam),
        (
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "no"}],
                "refusal": "no",
                "audio": {"id": "audio_1"},
                "function_call": {"name": "f", "arguments": "{}"},
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "2", "type": "custom", "custom": {"name": "g", "input": "x"}},
                ],
            },
            m.ChatCompletionAssistantMessageParam,
        ),
        ({"role": "tool", "content": "42", "tool_call_id": "1"}, m.ChatCompletionToolMessageParam),
        ({"role": "function", "content": None, "name": "f"}, m.ChatCompletionFunctionMessageParam),
        ({"role": "ipython", "content": "out"}, m.CustomChatCompletionMessageParam),
        (
            {
                "role": "planner",
                "content": ["plain", {"type": "thinking", "thinking": "hmm", "closed": True}],
                "tool_call_id": None,
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": ""}}],
                "reasoning": "r",
                "tools": [
                    {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}
                ],
            },
            m.CustomChatCompletionMessageParam,
        ),
        (
            {"author": {"role": "assistant", "name": "x"}, "content": [{"text": "hi"}], "channel": "final"},
            m.HarmonyMessage,
        ),
    ],
)
def test_each_message_type_parses_into_its_model(data: dict[str, Any], expected: type) -> None:
    assert type(MESSAGE.validate_python(data)) is expected


def test_assistant_tool_calls_are_told_apart_by_type() -> None:
    message = MESSAGE.validate_python(
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "2", "type": "custom", "custom": {"name": "g", "input": "x"}},
            ],
        }
    )
    assert isinstance(message, m.ChatCompletionAssistantMessageParam)
    assert message.tool_calls is not None
    assert [type(call) for call in message.tool_calls] == [
        t.ChatCompletionMessageFunctionToolCallParam,
        t.ChatCompletionMessageCustomToolCallParam,
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("plain text", str),
        ({"type": "text", "text": "hi"}, c.ChatCompletionContentPartTextParam),
        ({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}, c.ChatCompletionContentPartImageParam),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, c.ChatCompletionContentPartInputAudioParam),
        ({"type": "file", "file": {"file_id": "file-1"}}, c.File),
        ({"type": "audio_url", "audio_url": {"url": "https://x/a.mp3"}}, c.ChatCompletionContentPartAudioParam),
        ({"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}, c.ChatCompletionContentPartVideoParam),
        ({"type": "refusal", "refusal": "no"}, c.ChatCompletionContentPartRefusalParam),
        ({"image_url": "https://x/y.png", "uuid": "u"}, c.CustomChatCompletionContentSimpleImageParam),
        ({"type": "image_embeds", "image_embeds": "b64"}, c.ChatCompletionContentPartImageEmbedsParam),
        ({"type": "audio_embeds", "audio_embeds": {"a": "b64"}}, c.ChatCompletionContentPartAudioEmbedsParam),
        ({"audio_url": "https://x/a.mp3"}, c.CustomChatCompletionContentSimpleAudioParam),
        ({"video_url": "https://x/v.mp4"}, c.CustomChatCompletionContentSimpleVideoParam),
        ({"type": "thinking", "thinking": "hmm"}, c.CustomThinkCompletionContentParam),
        ({"type": "hologram", "hologram": {}}, c.UnknownContentPart),
    ],
)  # fmt: skip
def test_each_content_part_parses_into_its_model(data: Any, expected: type) -> None:
    assert type(PART.validate_python(data)) is expected


def test_media_parts_parse_in_any_role() -> None:
    # vLLM's custom-role fallback lets every role carry every part; the translation step decides.
    message = MESSAGE.validate_python(
        {"role": "system", "content": [{"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}]}
    )
    assert isinstance(message, m.ChatCompletionSystemMessageParam)
    assert isinstance(message.content, list)
    assert isinstance(message.content[0], c.ChatCompletionContentPartVideoParam)


def test_extra_message_keys_are_kept() -> None:
    message = MESSAGE.validate_python({"role": "assistant", "content": "x", "reasoning": "because"})
    assert message.model_extra == {"reasoning": "because"}


def validation_error(data: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(data)
    return invalid_request_from_validation(caught.value)


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages.0"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
        ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content.0"),
        ({"messages": [{"role": "user", "content": ["ok", {"type": "image_url", "image_url": "x"}]}]}, "messages.0.content.1.image_url"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "type": "web"}]}]}, "messages.0.tool_calls.0"),
        ({"messages": [{"author": {"role": "boss"}}]}, "messages.0.author.role"),
        ({"messages": [], "max_tokens": "many"}, "max_tokens"),
        ({"messages": [], "stop": 5}, "stop"),
        ({"messages": [], "seed": 2**63}, "seed"),
        ({"messages": [], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [], "response_format": {"type": "yaml"}}, "response_format.type"),
        ({"messages": [], "logits_processors": [{"qualname": "a.B", "surprise": 1}]}, "logits_processors.0.surprise"),
        ({"messages": [], "include_reasoning": None}, "include_reasoning"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_failing_field(data: dict[str, Any], param: str) -> None:
    error = validation_error(data)
    assert error.param == param
    assert error.status == 400
    assert param in error.message


def test_missing_field_message_says_so() -> None:
    assert validation_error({}).message == "Missing required parameter: 'messages'"


def test_further_invalid_fields_are_counted_but_not_alternatives() -> None:
    assert "(and" not in validation_error({"messages": [], "stop": 5}).message
    assert "(and 1 more invalid field)" in validation_error({"messages": [], "stop": 5, "n": "x"}).message


def test_spec_aliases_parse_and_serialise_under_their_spec_names() -> None:
    parsed = ChatCompletionRequest.model_validate(
        {
            "messages": [],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": "object"}},
            },
            "structured_outputs": {"json": {"type": "object"}, "_backend": "guidance"},
        }
    )
    dumped = parsed.model_dump(mode="json")
    assert dumped["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert dumped["structured_outputs"]["json"] == {"type": "object"}
    assert dumped["structured_outputs"]["_backend"] == "guidance"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"type": "structural_tag", "format": {"type": "any"}}, "StructuralTagResponseFormat"),
        (
            {"type": "structural_tag", "structures": [{"begin": "<f>", "end": "</f>"}], "triggers": ["<f"]},
            "LegacyStructuralTagResponseFormat",
        ),
        ({"type": "json_object"}, "ResponseFormat"),
    ],
)
def test_response_format_shapes_are_told_apart(data: dict[str, Any], expected: str) -> None:
    parsed = ChatCompletionRequest.model_validate({"messages": [], "response_format": data})
    assert type(parsed.response_format).__name__ == expected
