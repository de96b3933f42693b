"""Why a chat template failed, as plain data, and the 400 each reason becomes.

Rendering happens either in-process (the model's own, trusted template) or in the template sandbox's worker
process (a template supplied with the request). The worker cannot hand exceptions back (it only sends bytes:
nothing a compromised worker sends is unpickled), so both paths reduce an exception to a `TemplateFailure`
with `failure_of` and turn it into the same `InvalidRequest` with `invalid_request`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, cast

from jaxserve.errors import InvalidRequest

FailureKind = Literal[
    "syntax",  # not valid Jinja
    "security",  # the sandbox refused an attribute or namespace access
    "load",  # {% include %}, {% import %} or {% extends %}: there are no template files to load
    "rejected",  # a TemplateError during rendering, e.g. the template's own raise_exception(...)
    "messages",  # the template could not handle these messages (missing key, wrong type...)
    "error",  # anything else the template raised (division by zero, recursion, a too large range...)
    # The sandbox's limits; their detail is the limit, filled in by the parent process.
    "time",
    "memory",
    "output",
    "size",
    "crash",
]

LIMIT_KINDS: frozenset[FailureKind] = frozenset({"time", "memory", "output", "size", "crash"})

_NO_LOADER_MESSAGE = "no loader for this environment specified"
"""What Jinja raises (as a TypeError) when a template asks for another template and the environment has no
loader, as transformers' environment never has."""


@dataclass(frozen=True)
class TemplateFailure:
    """One failed render: what kind of failure, and the detail worth telling the client."""

    kind: FailureKind
    detail: str = ""

    def to_bytes(self) -> bytes:
        """The wire form the sandbox worker sends."""
        return json.dumps({"kind": self.kind, "detail": self.detail}).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> TemplateFailure:
        """Parse what `to_bytes` wrote (ValueError if it is anything else)."""
        value = json.loads(data.decode("utf-8"))
        if not isinstance(value, dict) or value.get("kind") not in _KINDS:
            raise ValueError(f"not a template failure: {data[:200]!r}")
        return cls(kind=cast(FailureKind, value["kind"]), detail=str(value.get("detail", "")))


_KINDS = frozenset(FailureKind.__args__)  # type: ignore[attr-defined]


def failure_of(exc: BaseException) -> TemplateFailure:
    """Classify an exception raised while compiling or rendering a chat template."""
    import jinja2
    import jinja2.sandbox

    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateFailure("syntax", f"{exc.message} (line {exc.lineno})")
    if isinstance(exc, jinja2.sandbox.SecurityError):
        return TemplateFailure("security", str(exc))
    if isinstance(exc, TypeError) and str(exc) == _NO_LOADER_MESSAGE:
        return TemplateFailure("load")
    if isinstance(exc, jinja2.TemplateError):
        return TemplateFailure("rejected", str(exc))
    if isinstance(exc, MemoryError):
        return TemplateFailure("memory")
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, AttributeError)):
        return TemplateFailure("messages", str(exc))
    return TemplateFailure("error", f"{type(exc).__name__}: {exc}")


def invalid_request(failure: TemplateFailure) -> InvalidRequest:
    """The 400 a failed render answers with; `param` names what the client should change."""
    detail = failure.detail
    match failure.kind:
        case "syntax":
            return InvalidRequest(f"the chat template is not valid Jinja: {detail}", param="chat_template")
        case "security":
            return InvalidRequest(
                f"the chat template tried to reach something templates may not use: {detail}",
                param="chat_template",
            )
        case "load":
            return InvalidRequest(
                "the chat template tried to include, import or extend another template; chat templates "
                "cannot load files",
                param="chat_template",
            )
        case "rejected":  # includes the template's own raise_exception(...)
            return InvalidRequest(f"the chat template rejected these messages: {detail}", param="messages")
        case "messages":
            return InvalidRequest(
                f"the messages could not be rendered by the chat template: {detail}", param="messages"
            )
        case "error":
            return InvalidRequest(f"the chat template failed: {detail}", param="chat_template")
        case "time":
            return InvalidRequest(
                f"the chat template exceeded the time limit: it did not finish rendering within {detail}",
                param="chat_template",
            )
        case "memory":
            return InvalidRequest(
                f"the chat template exceeded the memory limit of the template sandbox ({detail})",
                param="chat_template",
            )
        case "output":
            return InvalidRequest(
                f"the chat template exceeded the output size limit: it rendered more than {detail}",
                param="chat_template",
            )
        case "size":
            return InvalidRequest(
                f"the chat template exceeded the template size limit: it is longer than {detail}",
                param="chat_template",
            )
        case "crash":
            return InvalidRequest(
                f"the chat template crashed the template sandbox, most likely by exceeding its memory limit "
                f"({detail})",
                param="chat_template",
            )
