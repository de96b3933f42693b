"""A forced tool choice's output -> message.tool_calls, whole and streamed (vLLM's shapes)."""

from __future__ import annotations

import json
import re

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.translate.chat import ResponseShape
from jaxserve.http.translate.chunks import ChatChunkBuilder
from jaxserve.http.translate.forced_tool_calls import ToolCallDeltas, tool_call_message
from jaxserve.http.translate.forced_tools import ForcedToolChoice
from jaxserve.http.translate.response import to_chat_completion_response
from jaxserve.http.translate.streaming import StreamSettings

NAMED = ForcedToolChoice(name="get_weather")
REQUIRED = ForcedToolChoice()
CALLS = '[{"name": "get_weather", "parameters": {"city": "Zürich"}}, {"name": "get_time", "parameters": {}}]'
ID = re.compile(r"call_[0-9a-f]{24}")


def test_named_call_arguments_are_the_text_and_the_finish_reason_stays() -> None:
    message, finish = tool_call_message("assistant", '{"city": "Paris"}', "stop", NAMED)
    assert message.content == "" and finish == "stop"
    (call,) = message.tool_calls
    assert ID.fullmatch(call.id) and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')


def test_required_calls_are_parsed_and_finish_with_tool_calls() -> None:
    message, finish = tool_call_message("assistant", CALLS, "stop", REQUIRED)
    assert finish == "tool_calls" and message.content == ""
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("get_weather", '{"city": "Zürich"}'),
        ("get_time", "{}"),
    ]
    assert len({c.id for c in message.tool_calls}) == 2


def test_a_truncated_required_array_is_plain_content() -> None:
    message, finish = tool_call_message("assistant", CALLS[:30], "length", REQUIRED)
    assert message.content == CALLS[:30] and not message.tool_calls and finish == "length"


def test_named_deltas_send_the_header_once_then_arguments() -> None:
    deltas = ToolCallDeltas(NAMED)
    first = deltas.feed('{"ci')
    rest = deltas.feed('ty": 1}')
    assert first[0].id and first[0].function is not None and first[0].function.name == "get_weather"
    assert rest[0].id is None and rest[0].function is not None and rest[0].function.name is None
    assert "".join(d.function.arguments or "" for d in first + rest if d.function) == '{"city": 1}'
    assert deltas.finish_reason("stop") == "stop"


def test_required_deltas_come_whole_per_call_whatever_the_cuts() -> None:
    for cut in (1, 3, 7, len(CALLS)):
        deltas = ToolCallDeltas(REQUIRED)
        sent = [d for i in range(0, len(CALLS), cut) for d in deltas.feed(CALLS[i : i + cut])]
        assert [(d.index, d.function.name, d.function.arguments) for d in sent if d.function] == [
            (0, "get_weather", '{"city": "Zürich"}'),
            (1, "get_time", "{}"),
        ]
        assert deltas.finish_reason("stop") == "tool_calls"


def test_brackets_inside_strings_do_not_end_a_call() -> None:
    text = '[{"name": "f", "parameters": {"s": "a}]\\"{["}}]'
    deltas = ToolCallDeltas(REQUIRED)
    sent = [d for char in text for d in deltas.feed(char)]
    assert len(sent) == 1 and sent[0].function is not None
    assert json.loads(sent[0].function.arguments or "") == {"s": 'a}]"{['}


def output(text: str, delta: str, finished: bool, reason: str | None = None) -> RequestOutput:
    return RequestOutput(
        request_id="r",
        prompt_token_ids=(1,),
        text=text,
        token_ids=tuple(range(len(text))),
        delta_text=delta,
        delta_token_ids=(),
        finished=finished,
        finish_reason=reason,
    )


def test_response_and_chunks_carry_tool_calls() -> None:
    shape = ResponseShape(role="assistant", echo_prefix="", return_token_ids=False, forced_tools=REQUIRED)
    response = to_chat_completion_response(
        [output(CALLS, CALLS, True, "stop")],
        response_id="x",
        model="m",
        created=0,
        prompt_tokens=1,
        shape=shape,
    )
    assert response.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in response.choices[0].message.tool_calls] == ["get_weather", "get_time"]

    builder = ChatChunkBuilder(
        response_id="x", model="m", created=0, prompt_tokens=1, settings=StreamSettings(), shape=shape
    )
    half = len(CALLS) // 2
    chunks = builder.chunks_for(output(CALLS[:half], CALLS[:half], False))
    chunks += builder.chunks_for(output(CALLS, CALLS[half:], True, "stop"))
    bodies = [json.loads(chunk.to_json()) for chunk in chunks]
    calls = [call for body in bodies for call in body["choices"][0]["delta"].get("tool_calls", [])]
    assert [call["function"]["name"] for call in calls] == ["get_weather", "get_time"]
    assert bodies[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("content" not in body["choices"][0]["delta"] for body in bodies[1:-1])
