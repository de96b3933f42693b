"""`jaxserve` command line: `serve` runs the OpenAI-compatible server, `bench` load-tests one,
`inspect` describes a model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from jaxserve.errors import ModelLoadError
from jaxserve.http.reasoning.registry import REASONING_PARSERS
from jaxserve.http.tool_parsers.registry import TOOL_PARSERS
from jaxserve.modeling.template_sandbox import SandboxLimits

log = logging.getLogger("jaxserve")


def _add_dtype_arg(p: argparse.ArgumentParser) -> None:
    """--dtype, as `serve` and `inspect` both take it (the names of jaxserve.modeling.loader.DTYPES, spelled
    out here so that `--help` does not import JAX)."""
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: float32 on CPU, else bf16"
    )


def _add_quantization_arg(p: argparse.ArgumentParser) -> None:
    """--quantization, as `serve` and `inspect` both take it (jaxserve.modeling.quantization's
    QUANTIZATION_CHOICES, spelled out here so that `--help` does not import JAX)."""
    p.add_argument(
        "--quantization",
        choices=["int8"],
        help="int8 weights with per-channel scales: W8A8 on CPU, weight-only on TPU/GPU (default: none)",
    )


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="GGUF file or Hugging Face checkpoint directory (default: embedded SmolLM2)"
    )
    p.add_argument(
        "--served-model-name", nargs="+", help="model id(s) clients send (default: from the model)"
    )
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    _add_dtype_arg(p)
    _add_quantization_arg(p)
    p.add_argument(
        "--max-model-len",
        type=int,
        help="context window in tokens (default: the model's, at most 2048 on CPU)",
    )
    p.add_argument("--max-num-seqs", type=int, default=8, help="most sequences running (decoded) together")
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=512,
        help="per-step token budget: one per decoding sequence, the rest for prompt chunks",
    )
    p.add_argument(
        "--max-prefill-rows",
        type=int,
        default=4,
        help="most prompt chunks of one size run together in one step (1: one at a time)",
    )
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache page")
    p.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        help="devices each layer is split across (attention heads, MLP width, vocabulary)",
    )
    p.add_argument(
        "--data-parallel-size",
        type=int,
        default=1,
        help="groups of --tensor-parallel-size devices that each take a share of the batch rows",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-host cluster that JAX detects itself (Cloud TPU pod slices); process 0 serves HTTP",
    )
    p.add_argument(
        "--attention-impl",
        choices=["auto", "reference", "chunked", "native", "pallas"],
        default="auto",
        help="paged attention: auto = the Pallas kernel on TPU; on CPU the native kernel (built on first use "
        "with the C++ compiler; without one, the chunked path for decode steps and the pure-JAX reference for "
        "prompt chunks); the reference elsewhere",
    )
    p.add_argument("--coordinator-address", help="multi-host: HOST:PORT of process 0's coordinator")
    p.add_argument("--num-processes", type=int, help="multi-host: how many processes (hosts) in all")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index, 0 serves HTTP")
    p.add_argument(
        "--kv-cache-memory",
        help="KV-cache pool size, e.g. 2GiB (default: a fraction of free memory, see --kv-cache-memory-fraction)",
    )
    p.add_argument(
        "--kv-cache-memory-fraction",
        type=float,
        help="share of device memory for weights plus KV cache (default 0.9 on TPU/GPU; on CPU 0.25 of "
        "available RAM, capped at twice what --max-num-seqs full-length sequences need)",
    )
    p.add_argument(
        "--scheduling-policy",
        choices=["fcfs", "priority"],
        default="fcfs",
        help="fcfs: first come first served; priority: lower request `priority` first, preempting",
    )
    p.add_argument(
        "--no-enable-prefix-caching",
        dest="enable_prefix_caching",
        action="store_false",
        help="do not share KV-cache pages between requests with a common prompt prefix",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("JAXSERVE_API_KEY"),
        help="require this bearer token on /v1 routes (or set JAXSERVE_API_KEY, which keeps it out of ps)",
    )
    p.add_argument(
        "--metrics-need-api-key",
        action="store_true",
        help="with an API key, /metrics needs it too (by default it stays open for Prometheus, as in vLLM)",
    )
    p.add_argument(
        "--allowed-origins", nargs="*", default=["*"], help="CORS origins allowed to call the API ('*' = any)"
    )
    p.add_argument(
        "--max-request-body", type=int, default=32 * 1024 * 1024, help="largest request body, bytes"
    )
    p.add_argument(
        "--max-waiting-requests",
        type=int,
        default=256,
        help="queued requests beyond the running ones; more get 503",
    )
    p.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds SIGTERM waits for running requests"
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        help="seconds a request may take from arrival before it is aborted with a 504 (default: no limit)",
    )
    p.add_argument(
        "--no-warmup", action="store_true", help="compile step shapes on first use instead of at start"
    )
    p.add_argument(
        "--compilation-cache-dir",
        default=os.environ.get(
            "JAXSERVE_COMPILATION_CACHE", str(Path.home() / ".cache" / "jaxserve" / "xla")
        ),
        help="where compiled steps are stored (in DIR/executables) for the next start to load ('' disables)",
    )
    _add_parser_args(p)
    _add_template_sandbox_args(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _add_parser_args(p: argparse.ArgumentParser) -> None:
    """Reading tool calls and reasoning out of generated text (vLLM's flags and parser names)."""
    p.add_argument(
        "--tool-call-parser",
        choices=sorted(TOOL_PARSERS),
        help="how the model writes tool calls: hermes (<tool_call> tags: Qwen, Hermes, SmolLM2), "
        "llama3_json (Llama 3.x JSON), mistral ([TOOL_CALLS])",
    )
    p.add_argument(
        "--enable-auto-tool-choice",
        action="store_true",
        help='serve tool_choice "auto" (the default when a request has tools); needs --tool-call-parser',
    )
    p.add_argument(
        "--exclude-tools-when-tool-choice-none",
        action="store_true",
        help='do not render a request\'s tools into the prompt when its tool_choice is "none"',
    )
    p.add_argument(
        "--reasoning-parser",
        choices=sorted(REASONING_PARSERS),
        help="split <think>…</think> reasoning into message.reasoning: deepseek_r1, qwen3",
    )


def _add_template_sandbox_args(p: argparse.ArgumentParser) -> None:
    """Limits on chat templates sent with requests (rendered in sandboxed worker processes)."""
    defaults = SandboxLimits()
    p.add_argument(
        "--chat-template-timeout",
        type=float,
        default=defaults.timeout_seconds,
        help="seconds a request's chat_template may take to render before the request gets a 400",
    )
    p.add_argument(
        "--chat-template-max-output",
        type=int,
        default=defaults.max_output_chars,
        help="most characters a request's chat_template may render",
    )
    p.add_argument(
        "--chat-template-max-size",
        type=int,
        default=defaults.max_template_chars,
        help="most characters in a request's chat_template",
    )
    p.add_argument(
        "--chat-template-memory",
        default=f"{defaults.memory_bytes // 2**20}MiB",
        help="address-space limit of each chat-template worker process, e.g. 1GiB",
    )
    p.add_argument(
        "--chat-template-workers",
        type=int,
        default=defaults.workers,
        help="worker processes rendering request chat templates (renders at once)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxserve", description="LLM inference server on JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve_args(sub.add_parser("serve", help="serve the OpenAI-compatible chat-completions API"))
    from jaxserve.bench.command import add_arguments as add_bench_args

    add_bench_args(
        sub.add_parser(
            "bench",
            help="load-test a server: throughput, TTFT, inter-token latency, compilations",
            description="Start `jaxserve serve` (or use --base-url) and run the load generator at each "
            "concurrency level with fixed prompt and output lengths.",
        )
    )
    _add_inspect_args(
        sub.add_parser("inspect", help="print a model's config, size, memory need and template")
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "bench":
        from jaxserve.bench.command import bench

        return bench(args)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "inspect":
            return inspect(args)
    except ModelLoadError as exc:
        log.error("%s", exc)
        return 2
    return 1


def _add_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", nargs="?", help="GGUF file or Hugging Face checkpoint directory (default: embedded SmolLM2)"
    )
    _add_dtype_arg(p)
    _add_quantization_arg(p)
    p.add_argument("--max-model-len", type=int, help="context to size the KV cache for (default: as serve)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def inspect(args: argparse.Namespace) -> int:
    """Print what `serve` would load, without loading the weights."""
    import json

    from jaxserve.modeling.default_model import default_model_path
    from jaxserve.modeling.summary import format_summary, summarize

    path = Path(args.model).expanduser() if args.model else default_model_path()
    summary = summarize(path, args.dtype, args.max_model_len, args.quantization)
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(format_summary(summary))
    return 0


def serve(args: argparse.Namespace) -> int:
    from jaxserve.engine.kv_memory import parse_size
    from jaxserve.engine.multihost import DistributedConfig
    from jaxserve.http.parser_settings import ParserSettings
    from jaxserve.modeling.sharding import ParallelConfig
    from jaxserve.server import ServerOptions, run_server

    try:
        parsers = ParserSettings(
            tool_call_parser=args.tool_call_parser,
            enable_auto_tool_choice=args.enable_auto_tool_choice,
            exclude_tools_when_tool_choice_none=args.exclude_tools_when_tool_choice_none,
            reasoning_parser=args.reasoning_parser,
        )
        parallel = ParallelConfig(args.tensor_parallel_size, args.data_parallel_size)
        distributed = DistributedConfig(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
            auto=args.distributed,
        )
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if args.request_timeout is not None and args.request_timeout <= 0:
        log.error("--request-timeout must be positive, got %s", args.request_timeout)
        return 2
    try:
        template_limits = SandboxLimits(
            timeout_seconds=args.chat_template_timeout,
            max_output_chars=args.chat_template_max_output,
            max_template_chars=args.chat_template_max_size,
            memory_bytes=parse_size(args.chat_template_memory),
            workers=args.chat_template_workers,
        )
    except ValueError as exc:
        log.error("chat template limits: %s", exc)
        return 2

    options = ServerOptions(
        model=args.model,
        served_model_names=tuple(args.served_model_name or ()),
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        quantization=args.quantization,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_prefill_rows=args.max_prefill_rows,
        block_size=args.block_size,
        kv_cache_memory=args.kv_cache_memory,
        kv_cache_memory_fraction=args.kv_cache_memory_fraction,
        scheduling_policy=args.scheduling_policy,
        enable_prefix_caching=args.enable_prefix_caching,
        api_key=args.api_key or None,
        metrics_need_api_key=args.metrics_need_api_key,
        warmup=not args.no_warmup,
        allowed_origins=tuple(args.allowed_origins),
        max_request_body=args.max_request_body,
        max_waiting_requests=args.max_waiting_requests,
        shutdown_timeout=args.shutdown_timeout,
        request_timeout=args.request_timeout,
        compilation_cache_dir=args.compilation_cache_dir or None,
        parsers=parsers,
        chat_template_limits=template_limits,
        parallel=parallel,
        distributed=distributed,
        attention_impl=args.attention_impl,
    )
    started = time.perf_counter()
    return run_server(options, started)


if __name__ == "__main__":
    sys.exit(main())
