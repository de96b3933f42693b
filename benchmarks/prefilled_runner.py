"""Shared set-up of the runner micro-benchmarks: a runner whose every slot holds the same prompt, and the
ABBA loop that times variants of it against each other."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.loader import LoadedModel
from jaxserve.sampling.params import SamplingParams


def prefilled_runner(
    model: LoadedModel, max_batch: int, max_model_len: int, prompt: list[int], params: SamplingParams
) -> tuple[ModelRunner, list[list[int]]]:
    """A runner with `max_batch` sequences, slot i owning its own whole-context run of pages, each with
    `prompt` already in its cache; returns the runner and each slot's block table."""
    buckets = BucketConfig(max_num_seqs=max_batch, max_model_len=max_model_len)
    per_seq = buckets.max_pages_per_seq
    runner = ModelRunner(model, buckets, max_batch * per_seq)
    tables = [list(range(slot * per_seq, (slot + 1) * per_seq)) for slot in range(max_batch)]
    for slot in range(max_batch):
        runner.start_sequence(slot, params, prompt, [])
        runner.prefill_chunk(RowInput(prompt, 0, params, 0, 0, slot, tables[slot]))
    return runner, tables


def abba_medians(step_seconds: Callable[[str], float], names: Sequence[str], rounds: int) -> dict[str, float]:
    """Median of `rounds` timings of each variant, taken alternately in ABBA order (A B, B A, A B, ...), so
    a machine whose speed drifts during the run slows every variant alike."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            times[name].append(step_seconds(name))
    return {name: statistics.median(samples) for name, samples in times.items()}
