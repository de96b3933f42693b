"""Engine logprobs -> the chat response's `logprobs` and vLLM's `prompt_logprobs` shapes."""

from __future__ import annotations

from functools import lru_cache

from jaxserve.engine.outputs import TokenLogprob
from jaxserve.http.protocol.chat_response import (
    ChatCompletionLogProb,
    ChatCompletionLogProbs,
    ChatCompletionLogProbsContent,
    Logprob,
)
from jaxserve.modeling.tokenizer import Tokenizer


class TokenRenderer:
    """How a token id appears in logprob output: its text (or `token_id:N`) and its raw bytes."""

    def __init__(self, tokenizer: Tokenizer, *, as_token_ids: bool) -> None:
        self._tokenizer = tokenizer
        self._as_ids = as_token_ids
        self.text = lru_cache(maxsize=4096)(self._text)

    def _text(self, token_id: int) -> str:
        if self._as_ids:
            return f"token_id:{token_id}"
        return self._tokenizer.decode([token_id], skip_special_tokens=False)

    def bytes(self, token_id: int) -> list[int]:
        # The token's own bytes, not the UTF-8 of its (possibly U+FFFD) text: a byte-level token that
        # is half of a multi-byte character still reports exactly the bytes it stands for.
        return list(self._tokenizer.token_to_bytes(token_id))


def chat_logprobs(entries: tuple[TokenLogprob, ...], render: TokenRenderer) -> ChatCompletionLogProbs:
    """OpenAI's per-token logprob content: the chosen token and the requested top alternatives."""
    content = [
        ChatCompletionLogProbsContent(
            token=render.text(entry.token_id),
            logprob=entry.logprob,
            bytes=render.bytes(entry.token_id),
            top_logprobs=[
                ChatCompletionLogProb(token=render.text(tid), logprob=lp, bytes=render.bytes(tid))
                for tid, lp in entry.top
            ],
        )
        for entry in entries
    ]
    return ChatCompletionLogProbs(content=content)


def prompt_logprobs(
    entries: tuple[TokenLogprob | None, ...], render: TokenRenderer
) -> list[dict[str, Logprob] | None]:
    """vLLM's shape: per prompt token a dict keyed by token id holding the token itself and the top-k."""
    out: list[dict[str, Logprob] | None] = []
    for entry in entries:
        if entry is None:
            out.append(None)
            continue
        ranked = {
            entry.token_id: Logprob(
                logprob=entry.logprob, rank=entry.rank, decoded_token=render.text(entry.token_id)
            )
        }
        for rank, (tid, lp) in enumerate(entry.top, start=1):
            ranked.setdefault(tid, Logprob(logprob=lp, rank=rank, decoded_token=render.text(tid)))
        out.append({str(tid): value for tid, value in ranked.items()})
    return out
