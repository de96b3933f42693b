"""Stop conditions applied to each new token on the host: stop tokens, EOS, stop strings, length."""

from __future__ import annotations

from dataclasses import dataclass

from jaxserve.sampling.params import SamplingParams


@dataclass(frozen=True)
class StopDecision:
    """Why a sequence finished: finish_reason "stop" or "length", and vLLM's stop_reason."""

    finish_reason: str
    stop_reason: int | str | None = None
    # For a stop string: the text length to keep (the string itself excluded unless asked for).
    truncate_text_at: int | None = None


def check_token(token_id: int, params: SamplingParams, eos_token_ids: frozenset[int]) -> StopDecision | None:
    """A token that ends generation by itself. Its text is not added to the output (vLLM)."""
    if token_id in params.stop_token_ids:
        return StopDecision("stop", stop_reason=token_id)
    if not params.ignore_eos and token_id in eos_token_ids:
        return StopDecision("stop")
    return None


def check_stop_strings(text: str, new_text_len: int, params: SamplingParams) -> StopDecision | None:
    """Search the end of `text` (where `new_text_len` characters were just added) for a stop string.

    Only the window that the new text could have completed is searched, so the cost per token is
    bounded by the longest stop string, not the output length.
    """
    if not params.stop:
        return None
    earliest: tuple[int, str] | None = None
    for stop in params.stop:
        window_start = max(0, len(text) - new_text_len - len(stop) + 1)
        index = text.find(stop, window_start)
        if index != -1 and (earliest is None or index < earliest[0]):
            earliest = (index, stop)
    if earliest is None:
        return None
    index, stop = earliest
    keep = index + len(stop) if params.include_stop_str_in_output else index
    return StopDecision("stop", stop_reason=stop, truncate_text_at=keep)


def stop_string_holdback(params: SamplingParams) -> int:
    """Characters withheld from streamed deltas because they may begin a stop string."""
    if not params.stop or params.include_stop_str_in_output:
        return 0
    return max(len(s) for s in params.stop) - 1
