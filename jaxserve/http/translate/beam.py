"""`use_beam_search` and `length_penalty` -> BeamSearchParams (vLLM's `to_beam_search_params`), and the
fields that cannot be combined with beam search.

vLLM's beam search ranks candidates by raw-model logprobs and silently ignores every field that shapes
the sampling distribution. Here those fields, set to anything that would change sampling, are a 400
naming the field instead; `temperature` and `seed` are accepted and change nothing (the search is
deterministic, as vLLM's is). The stop rules (`stop`, `stop_token_ids`, `ignore_eos`,
`include_stop_str_in_output`, `min_tokens`) and `max_tokens` are honoured
(jaxserve.engine.beam_search). `n` is the beam width, at most MAX_BEAM_WIDTH.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from jaxserve.engine.beam_search import MAX_BEAM_WIDTH, BeamSearchParams
from jaxserve.errors import InvalidRequest, UnsupportedField
from jaxserve.http.protocol.chat_request import ChatCompletionRequest
from jaxserve.http.protocol.completion import CompletionRequest
from jaxserve.sampling.params import MAX_LOGPROBS, SamplingParams

BEAM_SEARCH_REASON: Final = (
    "cannot be combined with use_beam_search (beam search ranks by raw-model logprobs)"
)

_CHANGES_SAMPLING: Final[dict[str, Callable[[Any], bool]]] = {
    "top_p": lambda v: v is not None and v != 1.0,
    "top_k": lambda v: v is not None and v not in (0, -1),
    "min_p": lambda v: v is not None and v != 0.0,
    "presence_penalty": lambda v: bool(v),
    "frequency_penalty": lambda v: bool(v),
    "repetition_penalty": lambda v: v is not None and v != 1.0,
    "logit_bias": lambda v: bool(v),
    "allowed_token_ids": lambda v: v is not None,
    "bad_words": lambda v: bool(v),
}
"""Request fields (shared by chat and completions) that reshape the sampling distribution, and which of
their values do."""


def check_beam_search_fields(request: ChatCompletionRequest | CompletionRequest) -> None:
    """Before tokenisation: refuse sampling fields under beam search, and a length_penalty without it."""
    if not request.use_beam_search:
        if request.length_penalty != 1.0:
            raise InvalidRequest(
                "length_penalty only applies to beam search; set use_beam_search=true or leave it at 1.0",
                param="length_penalty",
            )
        return
    if request.n is not None and request.n > MAX_BEAM_WIDTH:
        raise InvalidRequest(
            f"with use_beam_search, n is the beam width and at most {MAX_BEAM_WIDTH} (each beam's "
            f"candidates are its top 2 * n tokens and the engine reports at most {MAX_LOGPROBS}), "
            f"got {request.n}",
            param="n",
        )
    for name, changes in _CHANGES_SAMPLING.items():
        if changes(getattr(request, name)):
            raise UnsupportedField(name, BEAM_SEARCH_REASON)


def beam_search_params(
    request: ChatCompletionRequest | CompletionRequest, params: SamplingParams
) -> BeamSearchParams:
    """The beam search a request asks for, from the SamplingParams derived for it (which carry the
    validated max_tokens, stop rules and logprob counts)."""
    if params.max_tokens is None:
        raise ValueError("beam search needs a resolved max_tokens")
    return BeamSearchParams(
        beam_width=1 if request.n is None else request.n,
        max_tokens=params.max_tokens,
        length_penalty=request.length_penalty,
        ignore_eos=params.ignore_eos,
        include_stop_str_in_output=params.include_stop_str_in_output,
        stop=params.stop,
        stop_token_ids=params.stop_token_ids,
        min_tokens=params.min_tokens,
        skip_special_tokens=params.skip_special_tokens,
        logprobs=params.logprobs,
        prompt_logprobs=params.prompt_logprobs,
    )
