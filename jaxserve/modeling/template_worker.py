"""The template sandbox's worker process: renders untrusted chat templates under resource limits.

Runs in a process started with multiprocessing's `spawn` context (a fresh interpreter: forking the server
would copy JAX's threads and its memory). It imports only what rendering needs (jinja2 and transformers'
chat-template helpers, no tokenizer, no JAX), caps its own address space, core dumps and CPU time, then
serves one render at a time over a pipe until the pipe closes.

Rendering calls transformers' own `render_jinja_template`, after the same message normalisation its
`apply_chat_template` does, so a template renders here exactly as it would in-process: same sandboxed
Jinja environment, same globals (`raise_exception`, `strftime_now`, `tojson`...), same whitespace rules.

Replies are bytes, never pickles (a worker whose template broke out of Jinja's sandbox must not be able to
run code in the server by what it sends back): `T` + the UTF-8 text (lone surrogates kept), or `F` + a JSON
`TemplateFailure`. After a MemoryError the worker answers and exits, so the next render gets a fresh process.
"""

from __future__ import annotations

import math
import resource
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from jaxserve.modeling.template_failures import TemplateFailure, failure_of

READY = b"R"
TEXT_TAG = b"T"
FAILURE_TAG = b"F"

_CPU_SLACK_SECONDS = 2
"""CPU seconds beyond the render's wall-clock limit before the kernel's SIGXCPU ends the worker. The parent's
deadline normally ends an overrunning render first; this is the backstop if the parent cannot."""


@dataclass(frozen=True)
class RenderJob:
    """One render: the template, the conversation (already shaped by the tokenizer), the template variables
    (`add_generation_prompt`, `tools`, the tokenizer's special tokens, the request's kwargs...) and limits."""

    template: str
    conversation: list[dict[str, Any]]
    variables: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 2.0
    max_output_chars: int = 1 << 20


def encode_text(text: str) -> bytes:
    """A rendered prompt on the wire; surrogatepass keeps a template's lone surrogates byte-exact."""
    return TEXT_TAG + text.encode("utf-8", "surrogatepass")


def decode_text(data: bytes) -> str:
    """Inverse of `encode_text` without its tag."""
    return data.decode("utf-8", "surrogatepass")


def render(job: RenderJob) -> str:
    """Render like transformers' `apply_chat_template(..., tokenize=False)` for one conversation."""
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    conversation = _normalize_chat_messages(job.conversation)
    # Annotated `-> str` in transformers, but it returns (one text per conversation, generation indices).
    result: Any = render_jinja_template(
        conversations=[conversation], chat_template=job.template, **job.variables
    )
    rendered, _ = result
    return str(rendered[0])


def run(conn: Connection, memory_bytes: int) -> None:
    """The worker's main function (the multiprocessing target)."""
    # Ctrl-C reaches the whole process group; the server decides when its worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Imported before the address-space cap so the cap bounds rendering, not import-time peaks.
    import transformers.utils.chat_template_utils  # noqa: F401

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed 1 GiB worker must not write a core file
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_capped(memory_bytes, hard), hard))
    conn.send_bytes(READY)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the server closed the pipe or exited
            return
        if not isinstance(job, RenderJob):
            return
        _limit_cpu(job.timeout_seconds)
        reply, exhausted = _reply(job)
        try:
            conn.send_bytes(reply)
        except OSError:  # the server went away
            return
        if exhausted:
            return  # a MemoryError may have left half-built state behind; the next render gets a fresh worker


def _reply(job: RenderJob) -> tuple[bytes, bool]:
    """The reply to send, and whether the render ran out of memory."""
    try:
        text = render(job)
    except MemoryError:
        return FAILURE_TAG + TemplateFailure("memory").to_bytes(), True
    except Exception as exc:  # every failure is the template's or its input's: report it, keep serving
        return FAILURE_TAG + failure_of(exc).to_bytes(), False
    if len(text) > job.max_output_chars:
        return FAILURE_TAG + TemplateFailure("output").to_bytes(), False
    return encode_text(text), False


def _limit_cpu(timeout_seconds: float) -> None:
    """Allow this render the CPU time it has used so far plus its wall-clock limit plus slack."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    budget = math.ceil(usage.ru_utime + usage.ru_stime + timeout_seconds) + _CPU_SLACK_SECONDS
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (_capped(budget, hard), hard))


def _capped(value: int, hard: int) -> int:
    """A soft limit may not exceed the hard one."""
    return value if hard == resource.RLIM_INFINITY else min(value, hard)
