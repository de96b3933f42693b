"""Assemble and run the server: load the model and tokenizer, start the engine, serve HTTP."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
from aiohttp import web

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.buckets import BucketConfig, prefill_chunk_sizes_for
from jaxserve.engine.compilations import CompilationCounter
from jaxserve.engine.kv_memory import free_device_bytes, num_kv_pages, parse_size, stable_page_count
from jaxserve.engine.multihost import DistributedConfig, agree_on_minimum, is_leader
from jaxserve.engine.runner import ModelRunner
from jaxserve.errors import ModelLoadError
from jaxserve.http.app import build_app
from jaxserve.http.parser_settings import ParserSettings
from jaxserve.modeling.attention import AttentionImpl
from jaxserve.modeling.checkpoint import GGUFCheckpoint, open_checkpoint
from jaxserve.modeling.config import ModelConfig
from jaxserve.modeling.default_model import DEFAULT_SERVED_NAME, default_model_path
from jaxserve.modeling.kv_cache import page_bytes
from jaxserve.modeling.loader import load_model, resolve_max_model_len
from jaxserve.modeling.quantization import resolve_quantization
from jaxserve.modeling.sharding import ParallelConfig, kv_cache_shards
from jaxserve.modeling.template_sandbox import SandboxLimits, TemplateSandbox
from jaxserve.modeling.tokenizer import Tokenizer

log = logging.getLogger("jaxserve")


@dataclass(frozen=True)
class ServerOptions:
    model: str | None = None
    served_model_names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str | None = None
    quantization: str | None = None  # "int8" (QUANTIZATION_CHOICES) or None
    max_model_len: int | None = None
    max_num_seqs: int = 8
    max_num_batched_tokens: int = 512
    max_prefill_rows: int = 4
    block_size: int = 16
    kv_cache_memory: str | None = None
    kv_cache_memory_fraction: float | None = None
    scheduling_policy: str = "fcfs"
    enable_prefix_caching: bool = True
    api_key: str | None = field(default=None, repr=False)  # never in logs or tracebacks
    metrics_need_api_key: bool = False
    warmup: bool = True
    compilation_cache_dir: str | None = None
    allowed_origins: tuple[str, ...] = ("*",)
    max_request_body: int = 32 * 1024 * 1024
    max_waiting_requests: int = 256
    shutdown_timeout: float = 30.0
    request_timeout: float | None = None
    parsers: ParserSettings = ParserSettings()
    chat_template_limits: SandboxLimits = SandboxLimits()
    parallel: ParallelConfig = ParallelConfig()
    distributed: DistributedConfig = DistributedConfig()
    attention_impl: AttentionImpl = "auto"


CPU_KV_MEMORY_FRACTION = 0.25
ACCELERATOR_MEMORY_FRACTION = 0.9


def _kv_cache_pages(
    options: ServerOptions, cfg: ModelConfig, dtype: jnp.dtype, buckets: BucketConfig, shards: int
) -> int:
    """The page pool size: --kv-cache-memory (per device), else a fraction of free memory (on CPU capped
    at twice what max_num_seqs full-length sequences need: RAM is shared with everything else on a laptop).
    A page split over `shards` devices costs each of them 1/shards of its bytes."""
    one_page = page_bytes(cfg, buckets.page_size, dtype) // shards
    if options.kv_cache_memory is not None:
        return num_kv_pages(parse_size(options.kv_cache_memory), one_page, at_least=buckets.max_pages_per_seq)
    on_cpu = jax.default_backend() == "cpu"
    fraction = options.kv_cache_memory_fraction
    if fraction is None:
        fraction = CPU_KV_MEMORY_FRACTION if on_cpu else ACCELERATOR_MEMORY_FRACTION
    if not 0 < fraction <= 1:
        raise ValueError(f"--kv-cache-memory-fraction must be in (0, 1], got {fraction}")
    cap = 2 * buckets.max_num_seqs * buckets.max_pages_per_seq if on_cpu else None
    pages = num_kv_pages(
        free_device_bytes(fraction), one_page, at_least=buckets.max_pages_per_seq, at_most=cap
    )
    return stable_page_count(pages, at_least=buckets.max_pages_per_seq)


def build_runner(options: ServerOptions) -> tuple[ModelRunner, Path, GGUFCheckpoint | None]:
    """Load the model onto the mesh and compile its steps: all a process needs to run device calls."""
    model_path = Path(options.model) if options.model else default_model_path()
    log.info("loading model from %s", model_path)
    checkpoint = open_checkpoint(model_path)
    try:
        mesh = options.parallel.build_mesh()
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    quantization = resolve_quantization(options.quantization)
    if quantization is not None:
        log.info("quantization: int8 %s on %s", quantization.method, jax.default_backend())
    model = load_model(
        checkpoint, options.dtype, quantization, mesh=mesh, attention_impl=options.attention_impl
    )
    max_model_len = resolve_max_model_len(model.config, options.max_model_len)
    try:
        buckets = BucketConfig(
            max_num_seqs=options.max_num_seqs,
            max_model_len=max_model_len,
            page_size=options.block_size,
            max_num_batched_tokens=options.max_num_batched_tokens,
            max_prefill_rows=options.max_prefill_rows,
            prefill_chunk_sizes=prefill_chunk_sizes_for(mesh.devices.flat[0].platform),
        )
        num_pages = agree_on_minimum(
            _kv_cache_pages(options, model.config, model.dtype, buckets, kv_cache_shards(model.config, mesh))
        )
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    log.info(
        "KV cache: %d pages of %d tokens (%.0f MiB); mesh %s",
        num_pages,
        buckets.page_size,
        num_pages * page_bytes(model.config, buckets.page_size, model.dtype) / 2**20,
        dict(mesh.shape),
    )
    # The compiled steps go to the executable store, not JAX's persistent cache: an executable JAX took
    # from its cache is a deserialized one, and XLA:CPU serializes such an executable without some of its
    # kernels, so storing it would break the next start. Nothing else the server jits is worth caching
    # (all the rest compiles in well under a second).
    executables = (
        Path(options.compilation_cache_dir) / "executables" if options.compilation_cache_dir else None
    )
    runner = ModelRunner(model, buckets, num_pages, executable_dir=executables)
    if options.warmup:
        runner.warm_up()
    return runner, model_path, checkpoint if isinstance(checkpoint, GGUFCheckpoint) else None


def build_engine(options: ServerOptions) -> tuple[AsyncEngine, list[str]]:
    """Load everything and return the started engine with the names it is served under."""
    compilations = CompilationCounter()  # before warm-up: /metrics counts every compilation of the process
    runner, model_path, gguf = build_runner(options)
    if gguf is not None:  # parse the GGUF metadata once for weights and tokenizer
        tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata, source=str(model_path))
    else:
        tokenizer = Tokenizer.from_path(model_path)
    tokenizer.use_template_sandbox(TemplateSandbox(options.chat_template_limits))
    engine = AsyncEngine(
        runner,
        tokenizer,
        max_waiting=options.max_waiting_requests,
        scheduling_policy=options.scheduling_policy,
        enable_prefix_caching=options.enable_prefix_caching,
        request_timeout=options.request_timeout,
        compilations=compilations,
    )
    engine.start()
    if options.served_model_names:
        names = list(options.served_model_names)
    elif options.model:
        names = [model_path.stem if model_path.is_file() else model_path.name]
    else:
        names = [DEFAULT_SERVED_NAME]
    return engine, names


def run_server(options: ServerOptions, started: float) -> int:
    options.distributed.initialize()  # before anything touches a device
    if not is_leader():  # multi-host: HTTP and scheduling live on process 0; this one runs device calls
        runner, _, _ = build_runner(options)
        log.info("process %d follows process 0's device calls", jax.process_index())
        runner.follow_leader()
        return 0
    engine, names = build_engine(options)
    app = build_app(
        engine,
        served_model_names=names,
        api_key=options.api_key,
        allowed_origins=options.allowed_origins,
        max_request_bytes=options.max_request_body,
        parsers=options.parsers,
        metrics_need_api_key=options.metrics_need_api_key,
    )
    log.info(
        "serving %s on http://%s:%d (max_model_len=%d, max_num_seqs=%d, %d step shapes compiled, %d loaded, "
        "warm-up %.1fs); "
        "ready %.1fs after start",
        names[0],
        options.host,
        options.port,
        engine.max_model_len,
        options.max_num_seqs,
        engine.runner.compile_count,
        engine.runner.loaded_count,
        engine.runner.warmup_seconds,
        time.perf_counter() - started,
    )
    return asyncio.run(_serve(app, options, engine))


HANDLER_FLUSH_SECONDS = 2.0
"""At shutdown, how long handlers still running after the drain may take to finish their responses."""

ENGINE_WATCH_SECONDS = 0.5
"""How often the serving loop checks that the engine thread is alive."""

FATAL_EXIT_GRACE_SECONDS = 2.0
"""After a fatal engine fault, how long /health answers 503 (and the failed requests' error responses
flush) before the process exits non-zero for its supervisor to restart it."""


async def _serve(app: web.Application, options: ServerOptions, engine: AsyncEngine) -> int:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting, let running requests finish (up to
    --shutdown-timeout), exit 0. A second signal skips the wait. If the engine dies of a fatal fault,
    exit 1 so that a supervisor restarts the server."""
    # Our own drain loop below does the waiting; aiohttp's cleanup then only gives handlers a moment to
    # flush their last bytes before cancelling them (its default would wait another minute).
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=HANDLER_FLUSH_SECONDS
    )
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port)
    await site.start()
    signals = asyncio.Queue[int]()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    print(f"jaxserve ready on http://{options.host}:{options.port}", flush=True)
    received = await _stop_signal_or_engine_death(signals, engine)
    if received is None:
        log.error(
            "the engine stopped after a fatal fault; /health answers 503 and the server exits with status 1 "
            "in %.0f s so that its supervisor restarts it",
            FATAL_EXIT_GRACE_SECONDS,
        )
        await asyncio.sleep(FATAL_EXIT_GRACE_SECONDS)
        await runner.cleanup()
        engine.shutdown()
        return 1
    log.info(
        "received %s: no new connections; draining %d request(s)",
        signal.Signals(received).name,
        engine.in_flight,
    )
    await site.stop()
    deadline = loop.time() + options.shutdown_timeout
    while engine.in_flight and loop.time() < deadline and signals.empty():
        await asyncio.sleep(0.05)
    if engine.in_flight:
        log.warning("shutting down with %d request(s) unfinished", engine.in_flight)
    await runner.cleanup()
    engine.shutdown()
    engine.tokenizer.close()  # stops and reaps the chat-template sandbox's worker processes
    log.info("shut down")
    return 0


async def _stop_signal_or_engine_death(signals: asyncio.Queue[int], engine: AsyncEngine) -> int | None:
    """The first stop signal received, or None as soon as the engine is found dead."""
    while True:
        try:
            return await asyncio.wait_for(signals.get(), timeout=ENGINE_WATCH_SECONDS)
        except TimeoutError:
            if not engine.is_healthy():
                return None
