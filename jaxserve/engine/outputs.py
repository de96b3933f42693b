"""What the engine hands back to the HTTP layer for each request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestOutput:
    """A snapshot of one request's progress, emitted after each step that produced text for it.

    `text` and `token_ids` are cumulative for the whole completion so far; `delta_text` and
    `delta_token_ids` are what this snapshot adds. The last snapshot has `finished=True` and a
    `finish_reason` of "stop" (EOS, stop token or stop string) or "length" (max_tokens or context end);
    `stop_reason` is the matched stop string or stop token id, None for EOS or length (vLLM semantics).
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    text: str
    token_ids: tuple[int, ...]
    delta_text: str
    delta_token_ids: tuple[int, ...]
    finished: bool
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    # Set when the engine failed this request (a fault in its step); the HTTP layer answers 500.
    error: str | None = None
