"""One request -> its engine requests: how many choices (`n`), each choice's sampling seed, and the
scheduling options every engine request of it carries (`priority`, checked against the engine's policy).

`n > 1` is `n` engine requests for the same prompt, issued together: the engine's prefix cache lets
them share the prompt's KV pages (the engine holds a request back while another computes the blocks it
would reuse), so the prompt is computed once. vLLM's parallel sampling does the same with child requests.
"""

from __future__ import annotations

import dataclasses

from jaxserve.errors import InvalidRequest
from jaxserve.sampling.params import SamplingParams

MAX_CHOICES = 128
"""vLLM sets no limit on `n`; one request of this server should not be able to fill the whole queue
(the default allows 256 waiting requests), and 128 independent samples is far beyond normal use."""

_UINT64 = 1 << 64


def requested_n(n: int | None) -> int:
    """The number of choices a request asks for: 1 when null, otherwise 1..MAX_CHOICES."""
    if n is None:
        return 1
    if n < 1:
        raise InvalidRequest(f"n must be at least 1, got {n}", param="n")
    if n > MAX_CHOICES:
        raise InvalidRequest(f"n must be at most {MAX_CHOICES}, got {n}", param="n")
    return n


def choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """Choice `index`'s sampling rules: the request's, with seed + index when it has a seed (vLLM's
    `ParentRequest`), so the choices differ yet the whole request is reproducible.

    A sum of -1 would read as "no seed" (vLLM's convention, applied by SamplingParams), so sums are
    taken modulo 2**64, which names the same 64-bit seed.
    """
    if params.seed is None or index == 0:
        return params
    return dataclasses.replace(params, seed=(params.seed + index) % _UINT64)


def choice_request_id(request_id: str, index: int, n: int) -> str:
    """Engine request id of one choice (the request's own id when there is only one)."""
    return request_id if n == 1 else f"{request_id}-{index}"


def check_priority(priority: int, scheduling_policy: str) -> None:
    """A non-zero priority needs the engine's "priority" policy (vLLM refuses it under FCFS too).

    The engine checks this as well; checking here refuses the request before any tokenisation.
    """
    if priority != 0 and scheduling_policy != "priority":
        raise InvalidRequest(
            f"Got priority {priority} but priority scheduling is not enabled: this server schedules first "
            "come, first served (start it with --scheduling-policy priority)",
            param="priority",
        )
