"""The final engine output -> a `chat.completion` body of the spec's shape."""

from __future__ import annotations

import dataclasses

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.translate.response import to_chat_completion_response


def finished(
    text: str, token_ids: tuple[int, ...], finish_reason: str, stop_reason: int | str | None
) -> RequestOutput:
    return RequestOutput(
        request_id="chatcmpl-abc-1234",
        prompt_token_ids=(1, 2, 3),
        text=text,
        token_ids=token_ids,
        delta_text="",
        delta_token_ids=(),
        finished=True,
        finish_reason=finish_reason,
        stop_reason=stop_reason,
    )


def test_response_has_the_spec_shape_and_exact_usage() -> None:
    output = finished("Hello there", (11, 12, 13, 14), "stop", None)
    body = to_chat_completion_response(
        [output], response_id="chatcmpl-abc", model="smol", created=1700000000, prompt_tokens=3
    ).model_dump(mode="json")
    assert body["id"] == "chatcmpl-abc"
    assert body["object"] == "chat.completion"
    assert body["created"] == 1700000000
    assert body["model"] == "smol"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hello there"
    assert choice["message"]["tool_calls"] == []
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] is None
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_stop_reason_and_length_finish_are_passed_on() -> None:
    by_string = to_chat_completion_response(
        [finished("a", (5,), "stop", "\n")], response_id="x", model="m", created=0, prompt_tokens=1
    )
    by_length = to_chat_completion_response(
        [finished("ab", (5, 6), "length", None)], response_id="x", model="m", created=0, prompt_tokens=1
    )
    assert (by_string.choices[0].finish_reason, by_string.choices[0].stop_reason) == ("stop", "\n")
    assert (by_length.choices[0].finish_reason, by_length.choices[0].stop_reason) == ("length", None)


def test_n_choices_share_the_prompt_and_sum_their_tokens() -> None:
    """Choice i is output i; the prompt is counted once; cached_tokens is the first choice's (the others
    find the prompt cached because of it)."""
    outputs = [
        dataclasses.replace(finished("one", (4,), "stop", 2), num_cached_tokens=1),
        dataclasses.replace(finished("two two", (5, 6), "length", None), num_cached_tokens=3),
        dataclasses.replace(finished("", (), "stop", "x"), num_cached_tokens=3),
    ]
    body = to_chat_completion_response(
        outputs, response_id="x", model="m", created=0, prompt_tokens=3
    ).model_dump(mode="json")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == ["one", "two two", ""]
    assert [(c["finish_reason"], c["stop_reason"]) for c in body["choices"]] == [
        ("stop", 2),
        ("length", None),
        ("stop", "x"),
    ]
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 3,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
