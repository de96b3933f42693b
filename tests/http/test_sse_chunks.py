"""Engine outputs -> chat.completion.chunk objects (vLLM's order and shapes), and the stream options."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, cast

import pytest

from jaxserve.engine.outputs import RequestOutput, TokenLogprob
from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol import ChatCompletionRequest
from jaxserve.http.translate.chat import ResponseShape
from jaxserve.http.translate.chunks import ChatChunkBuilder
from jaxserve.http.translate.logprobs import TokenRenderer
from jaxserve.http.translate.streaming import StreamSettings, stream_settings
from jaxserve.modeling.tokenizer import Tokenizer

PROMPT = (1, 2, 3)


class LetterTokenizer:
    """Token i is the letter chr(96 + i): enough for TokenRenderer, which only decodes single tokens."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(96 + i) for i in ids)

    def token_to_bytes(self, token_id: int) -> bytes:
        return chr(96 + token_id).encode()


RENDER = TokenRenderer(cast(Tokenizer, LetterTokenizer()), as_token_ids=False)


def outputs(
    steps: list[tuple[str, int]],
    *,
    finish: tuple[str, int | str | None] = ("stop", None),
    logprobs: bool = False,
) -> list[RequestOutput]:
    """Cumulative engine snapshots: step i shows `text` (visible so far) after generating token i + 1."""
    result = []
    shown = ""
    for i, (text, token) in enumerate(steps):
        ids = tuple(t for _, t in steps[: i + 1])
        last = i == len(steps) - 1
        result.append(
            RequestOutput(
                request_id="r",
                prompt_token_ids=PROMPT,
                text=text,
                token_ids=ids,
                delta_text=text[len(shown) :],
                delta_token_ids=(token,),
                finished=last,
                finish_reason=finish[0] if last else None,
                stop_reason=finish[1] if last else None,
                logprobs=tuple(TokenLogprob(t, -0.5 * t, 1, ((t, -0.5 * t),)) for t in ids)
                if logprobs
                else None,
            )
        )
        shown = text
    return result


def stream(
    snapshots: list[RequestOutput],
    settings: StreamSettings | None = None,
    shape: ResponseShape | None = None,
) -> list[dict[str, Any]]:
    """Every chunk of a stream as the JSON a client receives."""
    builder = ChatChunkBuilder(
        response_id="chatcmpl-x",
        model="smol",
        created=1700000000,
        prompt_tokens=len(PROMPT),
        settings=settings or StreamSettings(),
        render=RENDER,
        **({"shape": shape} if shape else {}),
    )
    chunks = [chunk for output in snapshots for chunk in builder.chunks_for(output)]
    chunks += builder.closing_chunks()
    return [json.loads(chunk.to_json()) for chunk in chunks]


def test_role_chunk_then_content_then_finish_in_vllms_shape() -> None:
    chunks = stream(outputs([("H", 8), ("Hi", 9), ("Hi!", 2)], finish=("stop", None)))
    assert chunks[0] == {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "smol",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    assert [c["choices"][0]["delta"] for c in chunks[1:]] == [
        {"content": "H"},
        {"content": "i"},
        {"content": "!"},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert "stop_reason" not in chunks[2]["choices"][0]
    assert chunks[-1]["choices"][0]["stop_reason"] is None
    assert all("usage" not in c and c["id"] == "chatcmpl-x" for c in chunks)


def test_stop_reason_rides_on_the_finishing_chunk() -> None:
    chunks = stream(outputs([("a", 1), ("ab", 2)], finish=("stop", "\n")))
    assert chunks[-1]["choices"][0] | {"delta": None} == {
        "index": 0,
        "delta": None,
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": "\n",
    }


def test_outputs_without_new_text_send_nothing_until_the_text_appears() -> None:
    # Tokens 5 and 6 are held back (half a character, or a possible stop-string prefix).
    snapshots = outputs([("a", 1), ("a", 5), ("a", 6), ("abc", 3), ("abcd", 4)], logprobs=True)
    chunks = stream(snapshots, StreamSettings(include_usage=True, continuous_usage=True))
    content = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]][1:]
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["a", "bc", "d"]
    tokens_per_chunk = [[e["token"] for e in c["choices"][0]["logprobs"]["content"]] for c in content]
    assert tokens_per_chunk == [["a"], ["e", "f", "c"], ["d"]]
    assert [c["usage"]["completion_tokens"] for c in content] == [1, 4, 5]


def test_the_final_output_is_sent_even_without_new_text() -> None:
    chunks = stream(outputs([("ok", 1), ("ok", 2)], finish=("stop", None)))
    assert chunks[-1]["choices"][0]["delta"] == {"content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_missing_finish_reason_becomes_stop() -> None:
    # vLLM: `output.finish_reason if output.finish_reason else "stop"`.
    [*_, last] = outputs([("a", 1)])
    unreasoned = dataclasses.replace(last, finish_reason=None)
    assert stream([unreasoned])[-1]["choices"][0]["finish_reason"] == "stop"


def test_logprobs_per_chunk_concatenate_to_one_entry_per_token() -> None:
    chunks = stream(outputs([("a", 1), ("ab", 2), ("abc", 3)], finish=("length", None), logprobs=True))
    assert chunks[0]["choices"][0]["logprobs"] is None
    entries = [e for c in chunks[1:] for e in c["choices"][0]["logprobs"]["content"]]
    assert entries == [
        {
            "token": t,
            "logprob": lp,
            "bytes": [ord(t)],
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": [ord(t)]}],
        }
        for t, lp in (("a", -0.5), ("b", -1.0), ("c", -1.5))
    ]


def test_include_usage_adds_one_final_chunk_with_empty_choices() -> None:
    chunks = stream(outputs([("a", 1), ("ab", 2)]), StreamSettings(include_usage=True))
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-1] == {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "smol",
        "choices": [],
        "usage": {
            "prompt_tokens": 3,
            "total_tokens": 5,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_continuous_usage_puts_usage_so_far_on_every_chunk() -> None:
    chunks = stream(outputs([("a", 1), ("ab", 2), ("abc", 3)]), StreamSettings(True, True))
    assert [(c["usage"]["completion_tokens"], c["usage"]["total_tokens"]) for c in chunks] == [
        (0, 3),
        (1, 4),
        (2, 5),
        (3, 6),
        (3, 6),
    ]


def test_shape_sets_role_echo_and_token_ids() -> None:
    shape = ResponseShape(role="user", echo_prefix="Once", return_token_ids=True)
    chunks = stream(outputs([("a", 1), ("a", 5), ("ab", 2)]), shape=shape)
    assert chunks[0]["choices"][0]["delta"] == {"role": "user", "content": ""}
    assert chunks[0]["prompt_token_ids"] == list(PROMPT)
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "Once"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert [c["choices"][0]["token_ids"] for c in chunks[2:]] == [[1], [5, 2]]
    assert all("prompt_token_ids" not in c for c in chunks[1:])


def test_nothing_may_follow_the_finish() -> None:
    builder = ChatChunkBuilder(
        response_id="x", model="m", created=0, prompt_tokens=1, settings=StreamSettings()
    )
    with pytest.raises(ValueError, match="has not finished"):
        builder.closing_chunks()
    [last] = outputs([("a", 1)])
    builder.chunks_for(last)
    with pytest.raises(ValueError, match="already finished"):
        builder.chunks_for(last)


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


@pytest.mark.parametrize(
    ("fields", "settings"),
    [
        ({}, None),
        ({"stream": False, "stream_options": {}}, None),  # vLLM: an empty object is falsy, so allowed
        ({"stream": True}, StreamSettings(False, False)),
        ({"stream": True, "stream_options": {}}, StreamSettings(True, False)),  # include_usage defaults true
        ({"stream": True, "stream_options": {"include_usage": True}}, StreamSettings(True, False)),
        ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, StreamSettings(True, True)),
        (
            {"stream": True, "stream_options": {"include_usage": False, "continuous_usage_stats": True}},
            StreamSettings(False, False),
        ),
        ({"stream": True, "stream_options": {"include_usage": None}}, StreamSettings(False, False)),
    ],
)
def test_stream_settings_follow_vllm(fields: dict[str, Any], settings: StreamSettings | None) -> None:
    assert stream_settings(request(**fields)) == settings


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": False, "stream_options": {"continuous_usage_stats": False}}, "stream_options"),
        ({"stream": True, "prompt_logprobs": 1}, "prompt_logprobs"),
        ({"stream": True, "prompt_logprobs": 0}, "prompt_logprobs"),
    ],
)
def test_stream_only_options_without_stream_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        stream_settings(request(**fields))
    assert caught.value.param == param


def two_choices(settings: StreamSettings, shape: ResponseShape | None = None) -> list[dict[str, Any]]:
    """A stream of two choices whose outputs interleave: 0, 1, 1 (finishes), 0 (finishes)."""
    builder = ChatChunkBuilder(
        response_id="chatcmpl-x",
        model="smol",
        created=1700000000,
        prompt_tokens=len(PROMPT),
        settings=settings,
        render=RENDER,
        n=2,
        **({"shape": shape} if shape else {}),
    )
    zero = [dataclasses.replace(o, num_cached_tokens=2) for o in outputs([("a", 1), ("ab", 2)])]
    one = [
        dataclasses.replace(o, num_cached_tokens=3)
        for o in outputs([("x", 24), ("xyz", 25), ("xyz!", 26)], finish=("length", None))
    ]
    order = [(0, zero[0]), (1, one[0]), (1, one[1]), (1, one[2]), (0, zero[1])]
    chunks = [chunk for index, output in order for chunk in builder.chunks_for(output, index)]
    chunks += builder.closing_chunks()
    return [json.loads(chunk.to_json()) for chunk in chunks]


def test_n_choices_open_together_then_interleave_each_with_its_own_finish() -> None:
    chunks = two_choices(StreamSettings(include_usage=True))
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks[:2]] == [
        (0, {"role": "assistant", "content": ""}),
        (1, {"role": "assistant", "content": ""}),
    ]
    body = [c["choices"][0] for c in chunks[2:-1]]
    assert [(c["index"], c["delta"]["content"], c["finish_reason"]) for c in body] == [
        (0, "a", None),
        (1, "x", None),
        (1, "yz", None),
        (1, "!", "length"),
        (0, "b", "stop"),
    ]
    # The prompt counts once, the completions add up; cached tokens are the first choice's.
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 3,
        "total_tokens": 8,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


def test_continuous_usage_counts_the_chunks_own_choice() -> None:
    chunks = two_choices(StreamSettings(include_usage=True, continuous_usage=True))
    per_chunk = [(c["choices"][0]["index"], c["usage"]["completion_tokens"]) for c in chunks[:-1]]
    assert per_chunk == [(0, 0), (1, 0), (0, 1), (1, 1), (1, 2), (1, 3), (0, 2)]
    assert all("prompt_tokens_details" not in c["usage"] for c in chunks[:-1])


def test_n_choices_each_get_the_echo_and_prompt_ids() -> None:
    chunks = two_choices(
        StreamSettings(), ResponseShape(role="assistant", echo_prefix="Hi", return_token_ids=True)
    )
    assert [c["choices"][0]["index"] for c in chunks[:4]] == [0, 1, 0, 1]
    assert [c["choices"][0]["delta"] for c in chunks[2:4]] == [{"content": "Hi"}, {"content": "Hi"}]
    assert [c.get("prompt_token_ids") for c in chunks[:4]] == [list(PROMPT), list(PROMPT), None, None]


def test_usage_waits_for_every_choice() -> None:
    builder = ChatChunkBuilder(
        response_id="x", model="m", created=0, prompt_tokens=1, settings=StreamSettings(True), n=2
    )
    [last] = outputs([("a", 1)])
    builder.chunks_for(last, 1)
    with pytest.raises(ValueError, match="has not finished"):
        builder.closing_chunks()
    builder.chunks_for(last, 0)
    assert len(builder.closing_chunks()) == 1
