"""Step times with XLA's own (Eigen) dots and with YNNPACK's, for each kernel layout, A/B in one process.

    cd benchmarks && ../.venv/bin/python dot_backends.py [--batch 1 4 16 64] [--context 200] [--rounds 8]
        [--prefill 32 128 512] [--layouts row feature] [--libraries eigen ynnpack]

The evidence behind `jaxserve/engine/compiler_options.py`, which picks the dot library per step shape, and
behind the loader's default kernel layout on CPU (feature-major: `jaxserve.modeling.decoder.
feature_major_matmul`). Loads the float model once per layout and builds one runner per (layout, library),
every slot prefilled with the same `--context`-token prompt; each runner compiles all its steps up front,
with the runner's choice of compiler options replaced by the variant's library. Times prompt chunks of
each `--prefill` size and single decode steps of all variants alternately (ABBA) and prints the medians;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from prefilled_runner import abba_medians, prefilled_runner  # a sibling module: these scripts run as files

from jaxserve.engine import runner as runner_module
from jaxserve.engine.compiler_options import NO_YNNPACK_DOTS, CompilerOptions
from jaxserve.engine.runner import ModelRunner, RowInput
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.loader import load_model
from jaxserve.sampling.params import SamplingParams

# The compiler options that force each library for every step here.
LIBRARIES: dict[str, CompilerOptions] = {"eigen": NO_YNNPACK_DOTS, "ynnpack": {}}
LAYOUTS = {"row": False, "feature": True}  # name -> load_model's feature_major


def forced_options(options: CompilerOptions, *_: object) -> CompilerOptions:
    """Stands in for compiler_options.step_compiler_options while one variant's runner compiles."""
    return dict(options)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--context", type=int, default=200, help="prompt tokens already in each slot's cache")
    parser.add_argument("--prefill", type=int, nargs="*", default=[32, 128, 512], help="prompt chunk sizes")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--libraries", nargs="+", choices=list(LIBRARIES), default=list(LIBRARIES))
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per variant and shape")
    args = parser.parse_args()

    greedy = SamplingParams(temperature=0.0)
    path = args.model or default_model_path()
    runners: dict[str, tuple[ModelRunner, list[list[int]]]] = {}
    chosen_options = runner_module.step_compiler_options
    prompt: list[int] = []

    def rows(name: str, batch: int, position: int) -> list[RowInput]:
        tables = runners[name][1]
        return [RowInput([1], position, greedy, 0, 1, i, tables[i]) for i in range(batch)]

    def prompt_chunk(name: str, tokens: int) -> RowInput:
        """The first `tokens` of the prompt, rewritten into slot 0's pages."""
        return RowInput(prompt[:tokens], 0, greedy, 0, 0, 0, runners[name][1][0])

    for layout in args.layouts:
        model = load_model(path, "float32", feature_major=LAYOUTS[layout])
        prompt = [(17 * i + 3) % model.config.vocab_size for i in range(max(args.context, *args.prefill))]
        for library in args.libraries:
            name = f"{layout}/{library}"
            runner_module.step_compiler_options = partial(forced_options, LIBRARIES[library])
            runners[name] = prefilled_runner(model, max(args.batch), 512, prompt[: args.context], greedy)
            runner = runners[name][0]
            for batch in args.batch:  # compiles each step shape under this library's options
                runner.decode(rows(name, batch, args.context))
            for tokens in args.prefill:
                runner.prefill_chunk(prompt_chunk(name, tokens))
    runner_module.step_compiler_options = chosen_options
    names = list(runners)

    def decode_seconds(batch: int, name: str) -> float:
        batch_rows = rows(name, batch, args.context + 1)
        start = time.perf_counter()
        runners[name][0].decode(batch_rows)
        return time.perf_counter() - start

    def prefill_seconds(tokens: int, name: str) -> float:
        chunk = prompt_chunk(name, tokens)
        start = time.perf_counter()
        runners[name][0].prefill_chunk(chunk)
        return time.perf_counter() - start

    print(f"{'step':>12} " + " ".join(f"{name + ' ms':>17}" for name in names))
    shapes = [(f"prefill {tokens}", partial(prefill_seconds, tokens)) for tokens in args.prefill] + [
        (f"decode {batch}", partial(decode_seconds, batch)) for batch in args.batch
    ]
    for label, step_seconds in shapes:
        medians = abba_medians(step_seconds, names, args.rounds)
        print(f"{label:>12} " + " ".join(f"{medians[name] * 1000:>17.1f}" for name in names), flush=True)


if __name__ == "__main__":
    main()
