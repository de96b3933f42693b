"""KV-cache pages held with and without sliding-window page freeing.

Runs the synchronous engine (scheduler + model runner, no HTTP) over a model given a sliding window on
every layer, twice: freeing pages that leave the window, and keeping every page to the end.

1. One sequence generating a long output: the pages it holds after each step (peak and last).
2. A fixed pool and many long requests queued at once: the most sequences decoding in one step, the
   mean number running, the preemptions the pool forced, and the steps to finish them all.

    PYTHONPATH=. .venv/bin/python benchmarks/window_pages.py               # the tiny random-weight model
    PYTHONPATH=. .venv/bin/python benchmarks/window_pages.py --model PATH  # a Hugging Face checkpoint dir

(PYTHONPATH=. : the tiny model is written by the test suite's checkpoint helper.)

Results are printed, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from flax import nnx

from jaxserve.engine.block_pool import FREED_PAGE, BlockPool
from jaxserve.engine.buckets import BucketConfig
from jaxserve.engine.core import EngineCore
from jaxserve.engine.detokenizer import IncrementalDetokenizer
from jaxserve.engine.runner import ModelRunner
from jaxserve.engine.scheduler import Scheduler
from jaxserve.engine.sequence import Sequence, SequenceStatus
from jaxserve.modeling.decoder import Decoder
from jaxserve.modeling.loader import LoadedModel, load_model
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.params import SamplingParams


def windowed_model(path: Path, window: int) -> LoadedModel:
    """The checkpoint's weights behind a decoder whose every layer attends through `window` tokens."""
    base = load_model(path, "float32")
    config = dataclasses.replace(base.config, sliding_window=window)
    graphdef, _ = nnx.split(
        nnx.eval_shape(lambda: Decoder(config, dtype=base.dtype, feature_major=base.feature_major))
    )
    return dataclasses.replace(base, config=config, graphdef=graphdef)


def make_sequence(index: int, tokenizer: Tokenizer, prompt_len: int, max_tokens: int) -> Sequence:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    return Sequence(
        request_id=f"r{index}",
        prompt_ids=[5 + (index * 31 + i * 7) % 250 for i in range(prompt_len)],
        params=params,
        seed=index,
        max_tokens=max_tokens,
        detokenizer=IncrementalDetokenizer(tokenizer, skip_special_tokens=True),
        emit=lambda output: None,
        arrival=index,
    )


@dataclasses.dataclass(frozen=True)
class RunStats:
    held: list[int]  # pages the first sequence holds after each step until it ends
    most_decoding: int  # the most sequences decoding in one step
    mean_running: float  # sequences holding a slot, averaged over steps
    preemptions: int
    steps: int


def run(
    runner: ModelRunner, tokenizer: Tokenizer, window: int | None, num_pages: int, seqs: list[Sequence]
) -> RunStats:
    """Run `seqs` (all queued at once) to the end through the synchronous engine."""
    scheduler = Scheduler(runner.buckets, BlockPool(num_pages), sliding_window=window)
    core = EngineCore(runner, scheduler, tokenizer.eos_token_ids)
    for seq in seqs:
        scheduler.add(seq)
    held, decoding, running = [], [], []
    while scheduler.has_work():
        core.step()
        decoding.append(sum(1 for seq in scheduler.running if seq.status is SequenceStatus.DECODING))
        running.append(scheduler.num_running)
        if seqs[0].status is not SequenceStatus.FINISHED:
            held.append(sum(1 for page in seqs[0].block_table if page != FREED_PAGE))
    return RunStats(held, max(decoding), sum(running) / len(running), scheduler.num_preemptions, len(running))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="checkpoint directory, or 'tiny' (random weights)")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--prompt-len", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--num-pages", type=int, default=64, help="the fixed pool of the concurrency run")
    parser.add_argument("--requests", type=int, default=16, help="requests sent at once (= max_num_seqs)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.model)
        if args.model == "tiny":
            from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer, write_tiny_checkpoint

            path = Path(scratch)
            write_tiny_checkpoint("smollm2", path)
            write_sentencepiece_tokenizer(path)
        tokenizer = Tokenizer.from_path(path)
        buckets = BucketConfig(
            max_num_seqs=args.requests,
            max_model_len=args.max_model_len,
            page_size=args.page_size,
            prefill_chunk_sizes=(64,),
            max_num_batched_tokens=max(64, args.requests),
            min_kv_len=args.max_model_len,  # one block-table width: fewer shapes to compile
        )
        runner = ModelRunner(
            windowed_model(path, args.window), buckets, max(args.num_pages, buckets.max_pages_per_seq)
        )
        runner.warm_up()
        print(
            f"window {args.window}, page {args.page_size}, prompt {args.prompt_len} + {args.max_tokens} generated"
        )
        for window, label in ((None, "keep every page"), (args.window, "free outside window")):
            one = [make_sequence(0, tokenizer, args.prompt_len, args.max_tokens)]
            held = run(runner, tokenizer, window, runner.num_pages, one).held
            print(f"  one sequence, {label:20s}: peak {max(held)} pages held, {held[-1]} at the last step")
        for window, label in ((None, "keep every page"), (args.window, "free outside window")):
            many = [
                make_sequence(i, tokenizer, args.prompt_len, args.max_tokens) for i in range(args.requests)
            ]
            stats = run(runner, tokenizer, window, args.num_pages, many)
            print(
                f"  {args.requests} requests, {args.num_pages}-page pool, {label:20s}: "
                f"at most {stats.most_decoding} decoding at once, {stats.mean_running:.1f} running on average, "
                f"{stats.preemptions} preemptions, {stats.steps} steps"
            )


if __name__ == "__main__":
    main()
