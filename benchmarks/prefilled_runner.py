"""Shared set-up of the runner micro-benchmarks: a runner whose every slot holds the same prompt."""

from __future__ import annotations

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
