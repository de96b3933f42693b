"""`chat.completion.chunk`: the objects a streamed chat completion is made of (vLLM's shapes).

The spec describes only the request and the non-streaming response; the chunk shapes here are vLLM's
(`ChatCompletionStreamResponse` and friends), which OpenAI's clients parse. A chunk is serialised with
`exclude_unset`, as vLLM does, so it carries exactly the keys its builder set: the role chunk's delta is
`{"role": "assistant", "content": ""}`, a content chunk's delta is `{"content": ...}`, `stop_reason`
appears only on the finishing chunk, `usage` only where usage was asked for and token ids only where
`return_token_ids` asked for them. (vLLM also sets `prompt_token_ids`/`token_ids` to null when not asked;
they are left out here.) The always-present keys have no defaults, so a builder cannot forget them.
"""

from __future__ import annotations

from typing import Final, Literal

from jaxserve.http.protocol.base import ProtocolModel
from jaxserve.http.protocol.chat_response import ChatCompletionLogProbs, UsageInfo

CHUNK_OBJECT: Final = "chat.completion.chunk"


class DeltaFunctionCall(ProtocolModel):
    """A piece of a streamed function call: the name once, on the call's first delta; arguments in pieces."""

    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(ProtocolModel):
    """vLLM's tool-call delta: `id` and `type` only on a call's first delta; `index` names the call."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(ProtocolModel):
    """What one chunk adds to the message. `reasoning_content` repeats `reasoning` for older clients
    (vLLM sends both since renaming the field)."""

    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatCompletionResponseStreamChoice(ProtocolModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None  # return_token_ids: the tokens this chunk covers


class ChatCompletionStreamResponse(ProtocolModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatCompletionResponseStreamChoice]
    usage: UsageInfo | None = None
    prompt_token_ids: list[int] | None = None  # return_token_ids: on the first chunk only

    def to_json(self) -> str:
        """The chunk as one line of JSON with only the keys that were set (see the module docstring)."""
        return self.model_dump_json(exclude_unset=True)
