"""The asyncio face of the engine: `generate()` per request, the engine loop on its own thread."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
from collections.abc import AsyncIterator

from jaxserve.engine.block_pool import BlockPool
from jaxserve.engine.compilations import CompilationCounter
from jaxserve.engine.core import EngineCore
from jaxserve.engine.detokenizer import IncrementalDetokenizer
from jaxserve.engine.kv_window import uniform_window
from jaxserve.engine.outputs import RequestOutput
from jaxserve.engine.runner import ModelRunner
from jaxserve.engine.scheduler import Scheduler
from jaxserve.engine.sequence import Sequence
from jaxserve.engine.token_bans import bad_word_token_ids
from jaxserve.errors import EngineDead, EngineFault, InvalidRequest, RequestTimeout, ServerBusy
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.bitmask import allowed_bitmask
from jaxserve.sampling.params import SamplingParams
from jaxserve.sampling.structured import GrammarCompiler

log = logging.getLogger(__name__)

# How long the idle engine thread sleeps between checks that it should stop.
_IDLE_POLL_SECONDS = 0.5


def seed_to_uint32(seed: int) -> int:
    """Fold a request seed (any 64-bit integer) into the 32 bits a PRNG key is made from."""
    seed &= (1 << 64) - 1
    return (seed ^ (seed >> 32)) & 0xFFFFFFFF


class AsyncEngine:
    """Implements jaxserve.engine.protocol.EngineClient."""

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        max_waiting: int = 256,
        scheduling_policy: str = "fcfs",
        enable_prefix_caching: bool = True,
        num_pages: int | None = None,
        request_timeout: float | None = None,
        compilations: CompilationCounter | None = None,
        free_pages_outside_window: bool = True,
        overlap_decode_steps: bool = True,
    ) -> None:
        """`num_pages` (default: all the runner's cache) bounds the pages the scheduler hands out;
        `request_timeout` (seconds from arrival, default none) aborts a request that has not finished.
        With `free_pages_outside_window` (default) a model whose every layer attends through one sliding
        window gives back the pages that have left it while the sequence runs. With
        `overlap_decode_steps` (default) a batch that decodes again has its next step dispatched before
        the tokens of the one running are read (EngineCore.step)."""
        if request_timeout is not None and request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout}")
        self.request_timeout = request_timeout
        self.compilations = compilations  # this process's XLA compilations, for /metrics (server only)
        self.scheduling_policy = scheduling_policy
        self.tokenizer = tokenizer
        self.runner = runner
        self.max_model_len = runner.buckets.max_model_len
        # Structured outputs: the HTTP layer compiles each request's grammar with it before queueing.
        self.grammars = GrammarCompiler(tokenizer, runner.vocab_size)
        pool = BlockPool(num_pages or runner.num_pages, enable_prefix_caching=enable_prefix_caching)
        window = uniform_window(runner.model.config) if free_pages_outside_window else None
        self.core = EngineCore(
            runner,
            Scheduler(runner.buckets, pool, scheduling_policy, sliding_window=window),
            tokenizer.eos_token_ids,
            overlap_decode_steps,
        )
        self._arrivals = itertools.count()
        # Requests admitted past the queue check and not yet ended. Touched only on the event loop.
        self.in_flight = 0
        self.max_in_flight = runner.buckets.max_num_seqs + max_waiting
        self._stop = threading.Event()
        self._dead = False
        self._thread = threading.Thread(target=self._loop, name="jaxserve-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():  # no step in flight: follower processes may exit now
            self.runner.release_followers()

    def is_healthy(self) -> bool:
        return not self._dead and self._thread.is_alive()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.core.drain_inbox(block=not self.core.has_work(), timeout=_IDLE_POLL_SECONDS)
                if self.core.has_work():
                    self.core.step()
        except BaseException as exc:
            self._dead = True
            log.exception("engine loop died")
            # Nothing will step the sequences any more: end them now rather than leave their clients waiting.
            try:
                self.core.fail_all("the engine stopped after a fatal fault")
            except Exception:
                log.exception("could not fail the requests left in the engine")
            if not isinstance(exc, EngineDead):  # an expected fatal fault, logged above; others are bugs
                raise

    def validate_prompt(self, prompt_token_ids: list[int], params: SamplingParams) -> int:
        """Check the prompt fits the context window and the model's vocabulary; return the resolved
        max_tokens."""
        n = len(prompt_token_ids)
        if n == 0:
            raise InvalidRequest("the prompt is empty", param="messages")
        vocab = self.runner.vocab_size
        # A tokenizer whose added tokens lie past the model's embedding table would otherwise fail the step.
        outside = next((t for t in prompt_token_ids if not 0 <= t < vocab), None)
        if outside is not None:
            raise InvalidRequest(
                f"the prompt has token id {outside}, outside the model's vocabulary of {vocab}",
                param="messages",
            )
        if n >= self.max_model_len:
            raise InvalidRequest(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your request "
                f"has {n} input tokens. Please reduce the length of the input messages.",
                param="messages",
                code="context_length_exceeded",
            )
        room = self.max_model_len - n
        if params.max_tokens is None:
            return room
        if params.max_tokens > room:
            raise InvalidRequest(
                f"'max_tokens' or 'max_completion_tokens' is too large: {params.max_tokens}. This model's "
                f"maximum context length is {self.max_model_len} tokens and your request has {n} input "
                f"tokens ({params.max_tokens} > {self.max_model_len} - {n}).",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return params.max_tokens

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Queue the request and yield its outputs; closing early aborts it and frees its slot."""
        if priority != 0 and self.scheduling_policy != "priority":
            raise InvalidRequest(
                f"priority {priority} needs the server started with --scheduling-policy priority",
                param="priority",
            )
        max_tokens = self.validate_prompt(prompt_token_ids, params)
        params.validate_for_vocab(self.runner.vocab_size)
        if params.min_tokens > max_tokens:
            raise InvalidRequest(
                f"min_tokens ({params.min_tokens}) exceeds the {max_tokens} tokens this request can generate",
                param="min_tokens",
            )
        if not self.is_healthy():
            raise EngineFault("the engine is not running", code="engine_dead")
        if self.in_flight >= self.max_in_flight:
            raise ServerBusy(
                f"the server is at capacity ({self.in_flight} requests running or waiting); retry later",
                code="queue_full",
            )
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[RequestOutput] = asyncio.Queue()
        # Internal ids are unique even when clients reuse a request_id.
        internal_id = f"{request_id}-{next(self._arrivals)}"

        def emit(output: RequestOutput) -> None:
            try:
                loop.call_soon_threadsafe(outputs.put_nowait, output)
            except RuntimeError:  # the requester's event loop has closed: nobody is left to tell
                log.debug("dropped an output of %s: its event loop is closed", internal_id)

        seq = Sequence(
            request_id=internal_id,
            prompt_ids=list(prompt_token_ids),
            params=params,
            seed=seed_to_uint32(params.seed) if params.seed is not None else secrets.randbits(32),
            max_tokens=max_tokens,
            detokenizer=IncrementalDetokenizer(
                self.tokenizer, skip_special_tokens=params.skip_special_tokens
            ),
            emit=emit,
            arrival=next(self._arrivals),
            allowed_bitmask=(
                allowed_bitmask(self.runner.vocab_size, params.allowed_token_ids)
                if params.allowed_token_ids is not None
                else None
            ),
            bad_words=bad_word_token_ids(self.tokenizer, params.bad_words),
            priority=priority,
            cache_salt=cache_salt,
            grammar=params.structured.matcher() if params.structured is not None else None,
        )
        finished = False
        deadline = None if self.request_timeout is None else loop.time() + self.request_timeout
        self.in_flight += 1
        self.core.add(seq)
        try:
            while not finished:
                output = await self._next_output(outputs, deadline)
                if output.error is not None:
                    finished = True
                    raise EngineFault(output.error)
                finished = output.finished
                yield output
        finally:
            self.in_flight -= 1
            if not finished:
                self.core.abort(internal_id)

    async def _next_output(
        self, outputs: asyncio.Queue[RequestOutput], deadline: float | None
    ) -> RequestOutput:
        """The next output; RequestTimeout once `deadline` (event-loop time) passes without one. An output
        already queued is delivered even past the deadline: the engine produced it in time."""
        if deadline is None or not outputs.empty():
            return await outputs.get()
        try:
            async with asyncio.timeout_at(deadline):
                return await outputs.get()
        except TimeoutError:
            assert self.request_timeout is not None
            raise RequestTimeout(self.request_timeout) from None
