"""Engine outputs -> the `chat.completion.chunk` objects of one streamed chat completion, in vLLM's order.

    role chunk                 delta {"role": <role>, "content": ""}, sent with the first engine output
    echo chunk (echo=true)     delta {"content": <the last message's content>}
    content chunks             delta {"content": <new text>}, logprobs of the tokens this chunk covers
    finishing chunk            the last new text, finish_reason and stop_reason
    usage chunk (if asked)     choices [] and the exact usage

An output that adds no visible text and does not finish (a token held back as half of a UTF-8 character
or as a possible stop-string prefix) sends no chunk; its tokens (logprobs, token_ids) ride with the next
chunk that is sent, so the chunks still concatenate to exactly one logprob entry per generated token.
(vLLM sends such outputs as `{"content": ""}` chunks.)
"""

from __future__ import annotations

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.protocol.chat_response import ChatCompletionLogProbs, UsageInfo
from jaxserve.http.protocol.chat_stream import (
    CHUNK_OBJECT,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
)
from jaxserve.http.translate.chat import ResponseShape
from jaxserve.http.translate.logprobs import TokenRenderer, chat_logprobs
from jaxserve.http.translate.streaming import StreamSettings

PLAIN_SHAPE = ResponseShape(role="assistant", echo_prefix="", return_token_ids=False)


class ChatChunkBuilder:
    """The chunks of one request's stream: feed it every engine output, then ask for the closing chunks.

    Its state is what has been sent: whether the opening chunks went out, and how many generated tokens
    chunks have covered (the engine's token ids and logprobs are cumulative).
    """

    def __init__(
        self,
        *,
        response_id: str,
        model: str,
        created: int,
        prompt_tokens: int,
        settings: StreamSettings,
        shape: ResponseShape = PLAIN_SHAPE,
        render: TokenRenderer | None = None,
    ) -> None:
        self._id = response_id
        self._model = model
        self._created = created
        self._prompt_tokens = prompt_tokens
        self._settings = settings
        self._shape = shape
        self._render = render
        self._started = False
        self._finished = False
        self._tokens_sent = 0
        self._completion_tokens = 0

    def chunks_for(self, output: RequestOutput) -> list[ChatCompletionStreamResponse]:
        """The chunks one engine output calls for: possibly none; the opening chunks before the first."""
        if self._finished:
            raise ValueError("the request has already finished")
        if output.error is not None:
            raise ValueError("a failed output has no chunk; the engine raises EngineFault for it")
        self._completion_tokens = len(output.token_ids)
        chunks = [] if self._started else self._opening_chunks(output)
        self._started = True
        if not output.finished and not output.delta_text:
            return chunks
        new_tokens = output.token_ids[self._tokens_sent :]
        logprobs = self._logprobs(output)
        self._tokens_sent = len(output.token_ids)
        choice = ChatCompletionResponseStreamChoice(
            index=0, delta=DeltaMessage(content=output.delta_text), logprobs=logprobs, finish_reason=None
        )
        if output.finished:
            self._finished = True
            choice.finish_reason = output.finish_reason or "stop"
            choice.stop_reason = output.stop_reason
        if self._shape.return_token_ids:
            choice.token_ids = list(new_tokens)
        chunks.append(self._chunk(choice, completion_tokens=self._completion_tokens))
        return chunks

    def closing_chunks(self) -> list[ChatCompletionStreamResponse]:
        """After the finishing chunk: the usage chunk, when include_usage asked for it."""
        if not self._finished:
            raise ValueError("the stream has not finished")
        if not self._settings.include_usage:
            return []
        return [
            ChatCompletionStreamResponse(
                id=self._id,
                object=CHUNK_OBJECT,
                created=self._created,
                model=self._model,
                choices=[],
                usage=self._usage(self._completion_tokens),
            )
        ]

    def _opening_chunks(self, first: RequestOutput) -> list[ChatCompletionStreamResponse]:
        role = self._chunk(
            ChatCompletionResponseStreamChoice(
                index=0,
                delta=DeltaMessage(role=self._shape.role, content=""),
                logprobs=None,
                finish_reason=None,
            ),
            completion_tokens=0,
        )
        if self._shape.return_token_ids:
            role.prompt_token_ids = list(first.prompt_token_ids)
        chunks = [role]
        if self._shape.echo_prefix:
            echo = ChatCompletionResponseStreamChoice(
                index=0,
                delta=DeltaMessage(content=self._shape.echo_prefix),
                logprobs=None,
                finish_reason=None,
            )
            chunks.append(self._chunk(echo, completion_tokens=0))
        return chunks

    def _logprobs(self, output: RequestOutput) -> ChatCompletionLogProbs | None:
        """The logprob entries of the tokens no chunk has covered yet."""
        if output.logprobs is None:
            return None
        if self._render is None:
            raise ValueError("an output with logprobs needs a TokenRenderer")
        return chat_logprobs(output.logprobs[self._tokens_sent :], self._render)

    def _chunk(
        self, choice: ChatCompletionResponseStreamChoice, *, completion_tokens: int
    ) -> ChatCompletionStreamResponse:
        chunk = ChatCompletionStreamResponse(
            id=self._id, object=CHUNK_OBJECT, created=self._created, model=self._model, choices=[choice]
        )
        if self._settings.continuous_usage:
            chunk.usage = self._usage(completion_tokens)  # assigned, so it counts as set
        return chunk

    def _usage(self, completion_tokens: int) -> UsageInfo:
        return UsageInfo(
            prompt_tokens=self._prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=self._prompt_tokens + completion_tokens,
        )
