"""Engine outputs -> the `chat.completion.chunk` objects of one streamed chat completion, in vLLM's order.

    role chunks                one per choice, delta {"role": <role>, "content": ""}, all sent with the
                               first engine output of any choice
    echo chunks (echo=true)    one per choice, delta {"content": <the last message's content>}
    content chunks             delta {"content": <new text>}, logprobs of the tokens this chunk covers;
                               with output parsing (translate.output_parsing) the delta also or instead
                               carries "reasoning"/"reasoning_content" and "tool_calls" pieces
    finishing chunk            per choice: its last new text, finish_reason and stop_reason
    usage chunk (if asked)     choices [] and the exact usage of all choices

With `n > 1` the choices' content chunks interleave as their engine outputs arrive; each chunk carries
one choice, named by its `index`.

An output that adds no visible text and does not finish (a token held back as half of a UTF-8 character,
as a possible stop-string prefix, or by a parser as a possible tag) sends no chunk; its tokens
(logprobs, token_ids) ride with the next chunk that is sent, so the chunks still concatenate to exactly
one logprob entry per generated token.
(vLLM sends such outputs as `{"content": ""}` chunks.)
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxserve.engine.outputs import RequestOutput
from jaxserve.http.protocol.chat_response import ChatCompletionLogProbs, PromptTokenUsageInfo, UsageInfo
from jaxserve.http.protocol.chat_stream import (
    CHUNK_OBJECT,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
)
from jaxserve.http.translate.chat import ResponseShape
from jaxserve.http.translate.forced_tool_calls import ToolCallDeltas
from jaxserve.http.translate.logprobs import TokenRenderer, chat_logprobs
from jaxserve.http.translate.output_parsing import ChoiceStream, OutputParsing, to_delta_message
from jaxserve.http.translate.streaming import StreamSettings

PLAIN_SHAPE = ResponseShape(role="assistant", echo_prefix="", return_token_ids=False)


@dataclass
class _ChoiceProgress:
    """What has been sent of one choice: how many generated tokens its chunks covered, whether it
    finished, and how many tokens it has generated (for usage)."""

    tokens_sent: int = 0
    completion_tokens: int = 0
    finished: bool = False
    stream: ChoiceStream | None = None  # reads reasoning and tool calls out of the text, when asked
    forced: ToolCallDeltas | None = None  # a named/required tool_choice: the text is tool calls


class ChatChunkBuilder:
    """The chunks of one request's stream: feed it every engine output of each of its `n` choices (with
    the choice's index), then ask for the closing chunks.

    Its state is what has been sent: whether the opening chunks went out, and per choice how many
    generated tokens chunks have covered (the engine's token ids and logprobs are cumulative).
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
        n: int = 1,
        parsing: OutputParsing | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"a stream has at least one choice, got n={n}")
        self._id = response_id
        self._model = model
        self._created = created
        self._prompt_tokens = prompt_tokens
        self._settings = settings
        self._shape = shape
        self._render = render
        self._started = False
        self._choices = [
            _ChoiceProgress(
                stream=parsing.choice_stream() if parsing is not None else None,
                forced=ToolCallDeltas(shape.forced_tools) if shape.forced_tools is not None else None,
            )
            for _ in range(n)
        ]
        self._cached_tokens = 0

    def chunks_for(self, output: RequestOutput, index: int = 0) -> list[ChatCompletionStreamResponse]:
        """The chunks one engine output of choice `index` calls for: possibly none; the opening chunks of
        every choice before the first."""
        progress = self._choices[index]
        if progress.finished:
            raise ValueError(f"choice {index} has already finished")
        if output.error is not None:
            raise ValueError("a failed output has no chunk; the engine raises EngineFault for it")
        progress.completion_tokens = len(output.token_ids)
        if index == 0:
            # The first choice's prompt is the one computed (or found cached) first; the others find it
            # cached because of it, so they say nothing about the request's own cache hits.
            self._cached_tokens = output.num_cached_tokens
        chunks = [] if self._started else self._opening_chunks(output)
        self._started = True
        delta = self._delta(progress, output)
        if not output.finished and delta is None:
            return chunks
        new_tokens = output.token_ids[progress.tokens_sent :]
        logprobs = self._logprobs(output, progress.tokens_sent)
        progress.tokens_sent = len(output.token_ids)
        choice = ChatCompletionResponseStreamChoice(
            index=index, delta=delta or DeltaMessage(content=""), logprobs=logprobs, finish_reason=None
        )
        if output.finished:
            progress.finished = True
            tools_called = progress.stream is not None and progress.stream.tools_called
            choice.finish_reason = "tool_calls" if tools_called else output.finish_reason or "stop"
            if progress.forced is not None:
                choice.finish_reason = progress.forced.finish_reason(output.finish_reason or "stop")
            choice.stop_reason = output.stop_reason
        if self._shape.return_token_ids:
            choice.token_ids = list(new_tokens)
        chunks.append(self._chunk(choice, completion_tokens=progress.completion_tokens))
        return chunks

    def closing_chunks(self) -> list[ChatCompletionStreamResponse]:
        """After every choice's finishing chunk: the usage chunk, when include_usage asked for it."""
        if not all(progress.finished for progress in self._choices):
            raise ValueError("the stream has not finished")
        if not self._settings.include_usage:
            return []
        usage = self._usage(sum(progress.completion_tokens for progress in self._choices))
        usage.prompt_tokens_details = PromptTokenUsageInfo(cached_tokens=self._cached_tokens)
        return [
            ChatCompletionStreamResponse(
                id=self._id,
                object=CHUNK_OBJECT,
                created=self._created,
                model=self._model,
                choices=[],
                usage=usage,
            )
        ]

    def _opening_chunks(self, first: RequestOutput) -> list[ChatCompletionStreamResponse]:
        """vLLM's order: the role chunk of every choice, then the echo chunk of every choice."""
        chunks = []
        for index in range(len(self._choices)):
            role = self._chunk(
                ChatCompletionResponseStreamChoice(
                    index=index,
                    delta=DeltaMessage(role=self._shape.role, content=""),
                    logprobs=None,
                    finish_reason=None,
                ),
                completion_tokens=0,
            )
            if self._shape.return_token_ids:
                role.prompt_token_ids = list(first.prompt_token_ids)
            chunks.append(role)
        if self._shape.echo_prefix:
            for index in range(len(self._choices)):
                echo = ChatCompletionResponseStreamChoice(
                    index=index,
                    delta=DeltaMessage(content=self._shape.echo_prefix),
                    logprobs=None,
                    finish_reason=None,
                )
                chunks.append(self._chunk(echo, completion_tokens=0))
        return chunks

    @staticmethod
    def _delta(progress: _ChoiceProgress, output: RequestOutput) -> DeltaMessage | None:
        """What this output adds to the choice's message; None while it adds nothing (held-back text)."""
        if progress.forced is not None:
            calls = progress.forced.feed(output.delta_text)
            return DeltaMessage(tool_calls=calls) if calls else None
        if progress.stream is None:
            return DeltaMessage(content=output.delta_text) if output.delta_text else None
        parsed = progress.stream.feed(output.delta_text)
        if output.finished:
            parsed.extend(progress.stream.finish())
        return to_delta_message(parsed) if parsed else None

    def _logprobs(self, output: RequestOutput, tokens_sent: int) -> ChatCompletionLogProbs | None:
        """The logprob entries of the tokens no chunk of this choice has covered yet."""
        if output.logprobs is None:
            return None
        if self._render is None:
            raise ValueError("an output with logprobs needs a TokenRenderer")
        return chat_logprobs(output.logprobs[tokens_sent:], self._render)

    def _chunk(
        self, choice: ChatCompletionResponseStreamChoice, *, completion_tokens: int
    ) -> ChatCompletionStreamResponse:
        chunk = ChatCompletionStreamResponse(
            id=self._id, object=CHUNK_OBJECT, created=self._created, model=self._model, choices=[choice]
        )
        if self._settings.continuous_usage:
            # Usage so far of this chunk's choice (vLLM); prompt_tokens_details only on the final usage.
            chunk.usage = self._usage(completion_tokens)  # assigned, so it counts as set
        return chunk

    def _usage(self, completion_tokens: int) -> UsageInfo:
        return UsageInfo(
            prompt_tokens=self._prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=self._prompt_tokens + completion_tokens,
        )
