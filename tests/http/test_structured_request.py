"""response_format / structured_outputs / forced tool_choice -> one GrammarRequest, vLLM's conflicts as 400s."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol import ChatCompletionRequest
from jaxserve.http.translate.chat import chat_prompt, response_shape
from jaxserve.http.translate.forced_tools import ForcedToolChoice, check_tools, forced_tool_schema
from jaxserve.http.translate.structured import structured_request

MESSAGES = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})


@pytest.mark.parametrize(
    ("fields", "kind", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "json_object", "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}},
            "json",
            "response_format.json_schema.schema",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": SCHEMA, "strict": True},
                }
            },
            "json",
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "structural_tag", "structures": [], "triggers": ["<f"]}},
            "structural_tag",
            "response_format",
        ),
        ({"structured_outputs": {"json": SCHEMA}}, "json", "structured_outputs.json"),
        ({"structured_outputs": {"regex": "[a-z]+"}}, "regex", "structured_outputs.regex"),
        ({"structured_outputs": {"choice": ["a", "b"]}}, "choice", "structured_outputs.choice"),
        ({"structured_outputs": {"grammar": "start: /a+/"}}, "grammar", "structured_outputs.grammar"),
        ({"structured_outputs": {"json_object": True}}, "json_object", "structured_outputs.json_object"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "json", "tool_choice"),
    ],
)
def test_each_source_becomes_one_constraint(fields: dict[str, Any], kind: str, param: str) -> None:
    grammar = structured_request(request(**fields))
    assert grammar is not None and grammar.kind == kind and grammar.param == param


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"response_format": {"type": "text"}},
        {"structured_outputs": {}},
        {"structured_outputs": {"json_object": False}},
    ],
)
def test_no_constraint(fields: dict[str, Any]) -> None:
    assert structured_request(request(**fields)) is None


def test_structured_outputs_options_apply_to_a_response_format_schema() -> None:
    grammar = structured_request(
        request(
            response_format={"type": "json_object"},
            structured_outputs={"disable_any_whitespace": True, "disable_additional_properties": True},
        )
    )
    assert grammar is not None and not grammar.whitespace_flexible and grammar.disable_additional_properties


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"json": SCHEMA, "grammar": "start: /a/"}}, "structured_outputs"),
        (
            {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}},
            "structured_outputs",
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "response_format": {"type": "json_object"},
            },
            "tool_choice",
        ),
        ({"structured_outputs": {"regex": "a"}, "use_beam_search": True}, "use_beam_search"),
        ({"structured_outputs": {"regex": "a", "_backend": "xgrammar"}}, "structured_outputs._backend"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
    ],
)
def test_conflicts_and_missing_parts_are_400s(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        structured_request(request(**fields))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": []}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
    ],
)
def test_tool_usage_errors_follow_vllm(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_tools(request(**fields))
    assert caught.value.param == param


def test_named_tool_schema_is_its_parameters() -> None:
    named = request(
        tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert forced_tool_schema(named) == WEATHER["function"]["parameters"]  # type: ignore[index]
    no_parameters = request(tools=[TIME], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert forced_tool_schema(no_parameters) == {"type": "object", "properties": {}}


def test_required_schema_is_an_array_of_calls_of_the_given_tools_with_shared_defs() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"$defs": {"D": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/D"}}},
        },
    }
    schema = forced_tool_schema(request(tools=[tool, TIME], tool_choice="required"))
    assert schema is not None
    assert (
        schema["type"] == "array"
        and schema["minItems"] == 1
        and schema["$defs"] == {"D": {"type": "integer"}}
    )
    names = [call["properties"]["name"]["enum"] for call in schema["items"]["anyOf"]]
    assert names == [["f"], ["get_time"]]
    assert "$defs" not in schema["items"]["anyOf"][0]["properties"]["parameters"]


def test_conflicting_tool_defs_are_a_400() -> None:
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"$defs": {"D": {"type": t}}}}}
        for n, t in (("a", "integer"), ("b", "string"))
    ]
    with pytest.raises(InvalidRequest) as caught:
        forced_tool_schema(request(tools=tools, tool_choice="required"))
    assert caught.value.param == "tools"


def test_tools_reach_the_template_and_forced_choices_shape_the_response() -> None:
    chat = request(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    prompt = chat_prompt(chat)
    assert prompt.template_args.tools is not None
    assert prompt.template_args.tools[0]["function"]["name"] == "get_weather"
    assert prompt.grammar is not None and prompt.grammar.spec == WEATHER["function"]["parameters"]  # type: ignore[index]
    assert response_shape(chat, prompt).forced_tools == ForcedToolChoice(name="get_weather")
    none = request(tools=[WEATHER], tool_choice="none")
    assert response_shape(none, chat_prompt(none)).forced_tools is None


def test_legacy_completions_take_response_format_and_structured_outputs() -> None:
    from jaxserve.http.protocol.completion import CompletionRequest

    regex = structured_request(
        CompletionRequest.model_validate({"prompt": "x", "structured_outputs": {"regex": "a+"}})
    )
    assert regex is not None and regex.kind == "regex" and regex.param == "structured_outputs.regex"
    json_object = structured_request(
        CompletionRequest.model_validate({"prompt": "x", "response_format": {"type": "json_object"}})
    )
    assert json_object is not None and json_object.kind == "json_object"
    with pytest.raises(InvalidRequest):
        structured_request(
            CompletionRequest.model_validate(
                {
                    "prompt": "x",
                    "response_format": {"type": "json_object"},
                    "structured_outputs": {"regex": "a"},
                }
            )
        )
