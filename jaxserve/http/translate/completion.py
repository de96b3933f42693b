"""A validated completions request -> one engine input per prompt (vLLM's rules).

`check_completion_request` makes every decision that needs no model, so a refused request costs no
tokenisation; `completion_inputs` then tokenises each prompt (or checks the ids it was given) and derives
its SamplingParams, all before the first prompt reaches the engine, so one bad prompt of a batch starts
nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaxserve.errors import InvalidRequest, UnsupportedField
from jaxserve.http.completion_support import check_completion_field_support
from jaxserve.http.protocol.completion import CompletionRequest
from jaxserve.http.translate.beam import check_beam_search_fields
from jaxserve.http.translate.chat import truncate_prompt
from jaxserve.http.translate.choices import requested_n
from jaxserve.http.translate.sampling import shared_sampling_fields
from jaxserve.http.translate.structured import structured_request
from jaxserve.sampling.params import SamplingParams

if TYPE_CHECKING:
    from jaxserve.modeling.tokenizer import Tokenizer
    from jaxserve.sampling.structured import GrammarCompiler

MAX_COMPLETION_LOGPROBS = 5
"""OpenAI's documented maximum for the legacy `logprobs` field. vLLM accepts up to its max_logprobs (20);
raising this to `sampling.params.MAX_LOGPROBS` would match it."""


@dataclass(frozen=True)
class CompletionInput:
    """One prompt of the request, ready for the engine.

    `prompt_text` is what `echo` prepends: the prompt as sent, or the decoded ids of a tokenised prompt
    (None when echo is off, to spare the decode).
    """

    prompt_token_ids: list[int]
    prompt_text: str | None
    sampling_params: SamplingParams


def check_completion_request(request: CompletionRequest) -> None:
    """Refuse, before any tokenisation, what this server does not honour or what vLLM rejects."""
    if request.stream_options is not None and not request.stream:
        raise InvalidRequest("Stream options can only be defined when `stream=True`.", param="stream_options")
    check_completion_field_support(request)
    requested_n(request.n)
    check_beam_search_fields(request)
    structured_request(request)  # conflicting or malformed constraints are refused before tokenising
    if request.logprobs is not None and not 0 <= request.logprobs <= MAX_COMPLETION_LOGPROBS:
        raise InvalidRequest(
            f"logprobs must be between 0 and {MAX_COMPLETION_LOGPROBS}, got {request.logprobs}",
            param="logprobs",
        )
    if request.max_tokens is not None and request.max_tokens < (0 if request.echo else 1):
        # vLLM allows 0 only with echo: "score this prompt" (the prompt and its logprobs, no completion).
        raise InvalidRequest(f"max_tokens must be at least 1, got {request.max_tokens}", param="max_tokens")


def prompt_batch(request: CompletionRequest) -> list[tuple[str, str | list[int]]]:
    """The request's prompts, each a text or a list of ids, with the `param` path naming it in errors
    (`prompt`, or `prompt.N` in a batch); an absent or empty prompt is a 400."""
    prompt = request.prompt
    if prompt is None or prompt == "" or prompt == []:
        raise InvalidRequest("Either prompt or prompt_embeds must be provided and non-empty.", param="prompt")
    if isinstance(prompt, str):
        return [("prompt", prompt)]
    items: list[Any] = list(prompt)
    if all(isinstance(item, int) for item in items):
        return [("prompt", items)]
    # The schema's other forms: a list of texts or a list of id lists.
    return [(f"prompt.{index}", item) for index, item in enumerate(items)]


def prompt_token_ids(
    prompt: str | list[int], param: str, tokenizer: Tokenizer, *, add_special_tokens: bool
) -> list[int]:
    """Ids of one prompt: a text is encoded; given ids must exist in the vocabulary (vLLM checks too)."""
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    else:
        ids = prompt
        bad = [t for t in ids if not 0 <= t < tokenizer.vocab_size]
        if bad:
            raise InvalidRequest(
                f"Token id {bad[0]} is out of vocabulary (ids are 0 to {tokenizer.vocab_size - 1})",
                param=param,
            )
    if not ids:
        raise InvalidRequest(f"'{param}' is empty: it has no tokens", param=param)
    return ids


def completion_sampling_params(
    request: CompletionRequest, *, prompt_len: int, max_model_len: int, param: str = "prompt"
) -> SamplingParams:
    """The sampling and stopping rules for one prompt that is `prompt_len` tokens long.

    As in vLLM: max_tokens is capped to the context left after the prompt; `echo` with `logprobs` asks for
    the prompt's logprobs too (so the echoed tokens have them); `echo` with max_tokens 0 runs one step and
    the response drops its token.
    """
    if prompt_len >= max_model_len:
        raise InvalidRequest(
            f"This model's maximum context length is {max_model_len} tokens, but the prompt has {prompt_len} "
            "tokens, which leaves no room for a completion. Please shorten the prompt.",
            param=param,
            code="context_length_exceeded",
        )
    room = max_model_len - prompt_len
    wanted = request.max_tokens
    max_tokens = room if wanted is None else max(1, min(wanted, room))
    prompt_logprobs = request.prompt_logprobs
    if prompt_logprobs is None and request.echo:
        prompt_logprobs = request.logprobs
    return SamplingParams(
        **shared_sampling_fields(request),
        logprobs=request.logprobs,
        prompt_logprobs=prompt_logprobs,
        max_tokens=max_tokens,
    )


def completion_inputs(
    request: CompletionRequest,
    tokenizer: Tokenizer,
    max_model_len: int,
    grammars: GrammarCompiler | None = None,
) -> list[CompletionInput]:
    """Every prompt of the request tokenised and checked, with its SamplingParams, in request order.
    An output constraint is compiled once with `grammars` and shared (each engine request matches its
    own copy)."""
    needs_text = bool(request.echo)
    inputs = []
    grammar = structured_request(request)
    compiled = None
    if grammar is not None:
        if grammars is None:
            raise UnsupportedField(grammar.param, "needs structured outputs, which this engine lacks")
        compiled = grammars.compile(grammar)
    for param, prompt in prompt_batch(request):
        ids = prompt_token_ids(prompt, param, tokenizer, add_special_tokens=request.add_special_tokens)
        ids = truncate_prompt(ids, request.truncate_prompt_tokens, max_model_len)
        if not needs_text:
            text = None
        elif isinstance(prompt, str):
            text = prompt
        else:
            # What vLLM echoes for a tokenised prompt: the ids decoded with special tokens kept.
            text = tokenizer.decode(ids, skip_special_tokens=False)
        params = completion_sampling_params(
            request, prompt_len=len(ids), max_model_len=max_model_len, param=param
        )
        if compiled is not None:
            params = dataclasses.replace(params, structured=compiled)
        inputs.append(CompletionInput(prompt_token_ids=ids, prompt_text=text, sampling_params=params))
    return inputs
