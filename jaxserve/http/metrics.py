"""Prometheus metrics under vLLM's names, so dashboards and autoscalers built for vLLM work unchanged.

One `ServingMetrics` per application, with its own `CollectorRegistry` (never prometheus-client's global
one: tests build many apps in one process, and two servers in one process must not share counters).

Recorder API (for every route that runs generations):

    outputs = request.app[METRICS].track(engine.generate(request_id, prompt_ids, params))

`track` returns the same outputs, timed as the handler consumes them: time to first token (from the
`generate` call to the first output carrying a token), the gap before each later output carrying tokens
(inter-token latency), and the end-to-end latency at the finished output, where it records the request's
token counts too. A request closed early (client gone, engine fault) still counts the tokens it processed
and its latencies so far, but no end-to-end sample. Callers that time generations themselves can call
`request_finished` directly instead.

Load gauges are read from the engine at scrape time: running and waiting requests, and
`vllm:kv_cache_usage_perc`, the fraction of KV-cache pages held by running sequences (pages that only
keep cached prefixes count as free). `vllm:prefix_cache_queries_total` counts prompt tokens looked up and
`vllm:prefix_cache_hits_total` those served from the cache; `vllm:num_preemptions_total` counts
sequences preempted for want of pages. jaxserve's own `jaxserve:step_shapes_loading` counts the compiled
step shapes a warm start is still loading in the background (the load generator waits for 0).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jaxserve.engine.outputs import RequestOutput

LABEL_NAMES = ("model_name", "engine")
"""vLLM labels every metric with the served model name and the engine index (always "0" here)."""

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vLLM's bucket boundaries (v1 `PrometheusStatLogger`), so histograms from both servers compare."""

STEP_SHAPES_LOADING_METRIC: Final = "jaxserve:step_shapes_loading"


class SchedulerView(Protocol):
    """What the gauges read from the engine's scheduler (`AsyncEngine.core`)."""

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def kv_cache_usage(self) -> float: ...

    @property
    def num_preemptions(self) -> int: ...


def scheduler_of(engine: object) -> SchedulerView | None:
    """The engine's scheduler if it exposes one (the real AsyncEngine does; stand-ins may not).

    Read from the HTTP thread while the engine thread runs: each value is one `len()` of a container,
    atomic under the GIL, so a scrape sees a slightly stale but never torn number.
    """
    core = getattr(engine, "core", None)
    if core is None or not all(
        hasattr(core, name) for name in ("num_running", "num_waiting", "kv_cache_usage", "num_preemptions")
    ):
        return None
    return core  # type: ignore[no-any-return]


class _EngineLoadCollector(Collector):
    """Running/waiting requests and slot usage, read when Prometheus scrapes."""

    def __init__(self, engine: object, label_values: Sequence[str]) -> None:
        self._engine = engine
        self._labels = list(label_values)

    def collect(self) -> Iterable[Metric]:
        scheduler = scheduler_of(self._engine)
        running = scheduler.num_running if scheduler else 0
        waiting = scheduler.num_waiting if scheduler else 0
        usage = scheduler.kv_cache_usage if scheduler else 0.0
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=LABEL_NAMES)
            gauge.add_metric(self._labels, float(value))
            yield gauge
        preemptions = CounterMetricFamily(
            "vllm:num_preemptions", "Cumulative number of preemptions from the engine.", labels=LABEL_NAMES
        )
        preemptions.add_metric(self._labels, float(scheduler.num_preemptions if scheduler else 0))
        yield preemptions
        compilations = getattr(self._engine, "compilations", None)
        if compilations is not None:  # jaxserve's own: a warmed server should never move these
            for name, doc, value in (
                ("jaxserve:xla_compilations", "XLA compilations in this process.", compilations.count),
                ("jaxserve:xla_compile_seconds", "Seconds spent in XLA compilation.", compilations.seconds),
            ):
                counter = CounterMetricFamily(name, doc, labels=LABEL_NAMES)
                counter.add_metric(self._labels, float(value))
                yield counter
        loading = getattr(getattr(self._engine, "runner", None), "num_shapes_loading", None)
        if isinstance(loading, int):  # until 0, some steps still share the CPU with background loads
            gauge = GaugeMetricFamily(
                STEP_SHAPES_LOADING_METRIC,
                "Compiled step shapes still loading from the executable store after start-up.",
                labels=LABEL_NAMES,
            )
            gauge.add_metric(self._labels, float(loading))
            yield gauge

    def describe(self) -> Iterable[Metric]:
        return []  # names are fixed; no need to collect (and touch the engine) at registration


class ServingMetrics:
    """The application's metrics and the recorder the generation routes report to."""

    def __init__(self, *, model_name: str, engine: object) -> None:
        self.registry = CollectorRegistry()
        labels = (model_name, "0")

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABEL_NAMES, registry=self.registry)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, LABEL_NAMES, registry=self.registry, buckets=buckets)

        # Children are created now so every series is exported (at 0) before the first request.
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.").labels(
            *labels
        )
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        ).labels(*labels)
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        ).labels(*labels)
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        ).labels(*labels)
        self.time_to_first_token = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        ).labels(*labels)
        self.inter_token_latency = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS
        ).labels(*labels)
        self.e2e_request_latency = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", E2E_BUCKETS
        ).labels(*labels)
        self.registry.register(_EngineLoadCollector(engine, labels))

    def request_finished(
        self,
        *,
        prompt_tokens: int,
        generation_tokens: int,
        ttft: float | None,
        inter_token_latencies: Sequence[float],
        e2e: float | None,
        cached_tokens: int = 0,
    ) -> None:
        """Record one request: its token counts (`cached_tokens`: prompt tokens served by the prefix
        cache) and latencies in seconds (None: not reached)."""
        self.prompt_tokens.inc(prompt_tokens)
        self.prefix_cache_queries.inc(prompt_tokens)
        self.prefix_cache_hits.inc(cached_tokens)
        self.generation_tokens.inc(generation_tokens)
        if ttft is not None:
            self.time_to_first_token.observe(ttft)
        for gap in inter_token_latencies:
            self.inter_token_latency.observe(gap)
        if e2e is not None:
            self.e2e_request_latency.observe(e2e)

    def track(self, outputs: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
        """`outputs`, passed through unchanged, timed from now (see the module docstring)."""
        return self._timed(outputs, time.perf_counter())

    async def _timed(
        self, outputs: AsyncIterator[RequestOutput], started: float
    ) -> AsyncGenerator[RequestOutput, None]:
        prompt_tokens: int | None = None
        cached_tokens = 0
        generated = 0
        first: float | None = None
        last = started
        gaps: list[float] = []
        recorded = False
        try:
            async for output in outputs:
                now = time.perf_counter()
                if prompt_tokens is None:
                    prompt_tokens = len(output.prompt_token_ids)
                cached_tokens = output.num_cached_tokens
                if output.delta_token_ids:
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
                    generated += len(output.delta_token_ids)
                if output.finished and not recorded:
                    recorded = True
                    self._record(
                        prompt_tokens, cached_tokens, generated, first, started, gaps, e2e=now - started
                    )
                yield output
        finally:
            if not recorded and prompt_tokens is not None:
                self._record(prompt_tokens, cached_tokens, generated, first, started, gaps, e2e=None)
            aclose = getattr(outputs, "aclose", None)
            if aclose is not None:
                await aclose()  # closing the engine's iterator is what aborts an unfinished request

    def _record(
        self,
        prompt_tokens: int,
        cached_tokens: int,
        generated: int,
        first: float | None,
        started: float,
        gaps: list[float],
        *,
        e2e: float | None,
    ) -> None:
        self.request_finished(
            prompt_tokens=prompt_tokens,
            generation_tokens=generated,
            ttft=None if first is None else first - started,
            inter_token_latencies=gaps,
            e2e=e2e,
            cached_tokens=cached_tokens,
        )


METRICS: Final = web.AppKey("jaxserve_metrics", ServingMetrics)
