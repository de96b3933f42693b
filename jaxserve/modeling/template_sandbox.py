"""Render chat templates supplied with a request in worker processes with time, memory and size limits.

transformers renders templates in Jinja's ImmutableSandboxedEnvironment, which keeps a template away from
Python internals and files but not from spending unbounded time (nested `range(100000)` loops, exponential
macros) or memory (`'a' * 10**10`). A thread cannot be stopped, so such a template rendered in the server
would pin a CPU or take the process down. Here a small pool of long-lived worker processes
(jaxserve.modeling.template_worker) renders them instead: the parent gives each render a wall-clock deadline
and kills and replaces a worker that overruns it or dies; the worker caps its own address space and CPU time.
The model's own template is trusted and keeps rendering in-process.

Callers block (they already run off the event loop, in `asyncio.to_thread`).
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from typing import Any

from jaxserve.errors import JaxserveError, ServerBusy
from jaxserve.modeling import template_worker
from jaxserve.modeling.template_failures import LIMIT_KINDS, FailureKind, TemplateFailure, invalid_request
from jaxserve.modeling.template_worker import RenderJob

log = logging.getLogger(__name__)

_MAX_UTF8_BYTES_PER_CHAR = 4


@dataclass(frozen=True)
class SandboxLimits:
    """Limits on rendering one request-supplied chat template."""

    timeout_seconds: float = 2.0
    """Wall-clock time for one render. Real templates render in milliseconds (the default model's in ~1 ms)."""
    max_output_chars: int = 1 << 20
    """Rendered prompt length (1 Mi characters, ~250k tokens of English): far beyond the context windows
    served on CPU; raise it for long-context models."""
    max_template_chars: int = 256 << 10
    """Template source length; the largest Hub templates are tens of KiB."""
    memory_bytes: int = 1 << 30
    """Address-space cap (RLIMIT_AS) of a worker. The worker maps ~175 MiB at rest (interpreter, jinja2,
    numpy via transformers), so this leaves ~850 MiB for a request's messages and the rendering."""
    workers: int = 2
    """Concurrent renders; a second worker keeps legitimate renders going while one template runs out its
    time limit."""
    startup_timeout_seconds: float = 60.0
    """A fresh worker imports transformers' template helpers (~1 s, more on a loaded machine)."""
    max_wait_seconds: float = 30.0
    """How long a render waits for a free worker before the request is refused as busy (503)."""

    def __post_init__(self) -> None:
        for name in ("timeout_seconds", "startup_timeout_seconds", "max_wait_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_output_chars", "max_template_chars", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.memory_bytes < 256 << 20:
            raise ValueError("memory_bytes must be at least 256 MiB (the worker needs ~175 MiB at rest)")

    def describe(self, kind: FailureKind) -> str:
        """The limit a failure of `kind` broke, for the error message."""
        match kind:
            case "time":
                return f"{self.timeout_seconds:g} s"
            case "output":
                return f"{self.max_output_chars} characters"
            case "size":
                return f"{self.max_template_chars} characters"
            case _:
                return f"{self.memory_bytes / 2**20:.0f} MiB"


class _WorkerLost(Exception):
    """The worker died or overran its deadline; it has been killed and must be replaced."""

    def __init__(self, kind: FailureKind) -> None:
        super().__init__(kind)
        self.kind = kind


class _WorkerDidNotStart(Exception):
    """A new worker died or hung before it was ready: a server problem, not the template's."""


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, limits: SandboxLimits) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self.process: SpawnProcess = context.Process(
            target=template_worker.run,
            args=(child_conn, limits.memory_bytes),
            name="jaxserve-template-sandbox",
            daemon=True,  # multiprocessing ends daemonic children at interpreter exit: a backstop for close()
        )
        self.process.start()
        child_conn.close()  # only the child holds its end now, so its death reads as EOF here
        self._ready = False
        self._limits = limits

    def render(self, job: RenderJob) -> bytes:
        """The worker's reply to `job`; raises _WorkerLost (after killing the worker) if there is none."""
        if not self._ready:
            self._await_ready()
        try:
            self._conn.send(job)
            if not self._conn.poll(job.timeout_seconds):
                self.kill()
                raise _WorkerLost("time")
            # A reply longer than any text within the output limit means the worker is not ours any more.
            return self._conn.recv_bytes(job.max_output_chars * _MAX_UTF8_BYTES_PER_CHAR + 1)
        except (EOFError, OSError) as exc:
            raise _WorkerLost(self._death()) from exc

    def _await_ready(self) -> None:
        started = time.perf_counter()
        try:
            if not self._conn.poll(self._limits.startup_timeout_seconds):
                raise OSError(f"not ready after {self._limits.startup_timeout_seconds:g} s")
            if self._conn.recv_bytes(16) != template_worker.READY:
                raise OSError("unexpected greeting")
        except (EOFError, OSError) as exc:
            self.kill()
            raise _WorkerDidNotStart(f"exit code {self.process.exitcode}: {exc!r}") from exc
        self._ready = True
        log.debug(
            "template sandbox worker %d ready in %.2f s", self.process.pid, time.perf_counter() - started
        )

    def _death(self) -> FailureKind:
        """Why the worker is gone: SIGXCPU is its CPU-time backstop, anything else most likely memory."""
        self.kill()
        return "time" if self.process.exitcode == -signal.SIGXCPU else "crash"

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """End the worker now and reap it (no zombie)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self._conn.close()

    def stop(self, grace_seconds: float = 1.0) -> None:
        """Ask the worker to exit (closing the pipe ends its loop), kill it if it does not."""
        self._conn.close()
        self.process.join(grace_seconds)
        self.kill()


class TemplateSandbox:
    """A lazily started pool of template workers; `render` is thread-safe and blocks."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        # One slot per worker: None until the slot's worker is first needed (or after it was lost). Last in,
        # first out, so a started worker is reused before another is started.
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(self.limits.workers):
            self._idle.put(None)
        self._lock = threading.Lock()
        self._started: set[_Worker] = set()
        self._closed = False

    def render(self, template: str, conversation: list[dict[str, Any]], variables: dict[str, Any]) -> str:
        """The rendered prompt text; InvalidRequest (param chat_template or messages) if the template fails or
        breaks a limit, ServerBusy if no worker frees up in time."""
        limits = self.limits
        if len(template) > limits.max_template_chars:
            raise invalid_request(TemplateFailure("size", limits.describe("size")))
        job = RenderJob(
            template=template,
            conversation=conversation,
            variables=variables,
            timeout_seconds=limits.timeout_seconds,
            max_output_chars=limits.max_output_chars,
        )
        worker = self._acquire()
        try:
            reply = worker.render(job)
        except _WorkerDidNotStart as exc:
            log.error("template sandbox worker %d did not start (%s)", worker.process.pid, exc)
            self._release(None, worker)
            raise JaxserveError(
                "the chat-template sandbox could not start a worker process; see the server log"
            ) from None
        except _WorkerLost as lost:
            log.warning("template sandbox worker %d lost (%s); replacing it", worker.process.pid, lost.kind)
            self._release(None, worker)
            raise invalid_request(TemplateFailure(lost.kind, limits.describe(lost.kind))) from None
        except BaseException:  # e.g. a job that cannot be pickled: the worker's state is unknown, replace it
            self._release(None, worker)
            raise
        if reply.startswith(template_worker.TEXT_TAG):
            self._release(worker, worker)
            return template_worker.decode_text(reply[1:])
        try:
            failure = TemplateFailure.from_bytes(reply[1:])
        except ValueError:
            failure = TemplateFailure("crash")  # not what our worker sends: do not trust it again
        if failure.kind in LIMIT_KINDS:
            failure = TemplateFailure(failure.kind, limits.describe(failure.kind))
        # A worker that ran out of memory exits after replying; one that sent garbage is not trusted.
        self._release(None if failure.kind in ("memory", "crash") else worker, worker)
        raise invalid_request(failure)

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (for tests and diagnostics)."""
        with self._lock:
            return [w.process.pid for w in self._started if w.process.pid is not None and w.alive()]

    def close(self) -> None:
        """Stop every worker and reap it; later renders are refused."""
        with self._lock:
            self._closed = True
            workers, self._started = list(self._started), set()
        for worker in workers:
            worker.stop()

    def __enter__(self) -> TemplateSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _acquire(self) -> _Worker:
        try:
            worker = self._idle.get(timeout=self.limits.max_wait_seconds)
        except queue.Empty:
            raise ServerBusy(
                "every chat-template sandbox worker is busy; retry later", param="chat_template"
            ) from None
        with self._lock:
            if self._closed:
                self._idle.put(worker)
                raise ServerBusy("the server is shutting down", param="chat_template")
            if worker is None or not worker.alive():
                if worker is not None:
                    self._started.discard(worker)
                    worker.kill()
                worker = _Worker(self.limits)
                self._started.add(worker)
            return worker

    def _release(self, keep: _Worker | None, used: _Worker) -> None:
        """Put the slot back: the worker if it can serve again, otherwise a replacement, started now so that
        it has imported its libraries by the time the next render needs it."""
        if keep is None:
            used.kill()
            with self._lock:
                self._started.discard(used)
                if not self._closed:
                    keep = _Worker(self.limits)
                    self._started.add(keep)
        self._idle.put(keep)
