"""What every answer of the generation endpoints must look like, whatever the request: never a 5xx, every 4xx
the OpenAI error object, every 200 a well-formed completion (JSON or an SSE stream ending in `[DONE]`)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def check_error_object(body: Any) -> None:
    """`{"error": {"message": str, "type": str, "param": ..., "code": ...}}`, nothing else."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error


def check_completion_json(body: Any, object_name: str) -> None:
    """A non-streamed chat.completion / text_completion: choices and usage present and typed."""
    assert isinstance(body, dict) and body.get("object") == object_name, body
    assert isinstance(body["choices"], list) and body["choices"], body
    for index, choice in enumerate(body["choices"]):
        assert choice["index"] == index, body
        if object_name == "chat.completion":
            # "assistant", or the last message's role under add_generation_prompt=false (as vLLM does).
            assert isinstance(choice["message"]["role"], str), choice
        else:
            assert isinstance(choice["text"], str), choice
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], usage


def check_event_stream(raw: bytes) -> list[Any]:
    """SSE `data:` events ending with `[DONE]`; each is a chunk or (only as the last) an error object.

    Returns the decoded events before `[DONE]`."""
    text = raw.decode("utf-8")
    assert text.endswith("data: [DONE]\n\n"), text[-300:]
    events = [block for block in text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events), text[:300]
    decoded = [json.loads(block[len("data: ") :]) for block in events[:-1]]
    for position, event in enumerate(decoded):
        if "error" in event:
            check_error_object(event)
            assert position == len(decoded) - 1, "an error event must be the last before [DONE]"
        else:
            assert event["object"] == "chat.completion.chunk", event
    return decoded


@dataclass
class Tally:
    """Statuses seen in a fuzz run, to report and to check that it exercised the engine at all."""

    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def generated(self) -> int:
        return self.statuses[200]


def check_response(
    status: int, content_type: str, raw: bytes, *, object_name: str, tally: Tally | None = None
) -> None:
    """The invariants of one answer of a generation endpoint."""
    if tally is not None:
        tally.statuses[status] += 1
    assert status < 500, (status, raw[:500])
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, raw[:300])
        check_error_object(json.loads(raw))
    elif content_type.startswith("text/event-stream"):
        assert status == 200, status
        check_event_stream(raw)
    else:
        assert status == 200, (status, raw[:300])
        check_completion_json(json.loads(raw), object_name)
