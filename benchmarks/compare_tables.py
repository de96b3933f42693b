"""The ratio table of a `compare_llamacpp.sh` run: jaxserve / llama-server per concurrency level.

    .venv/bin/python benchmarks/compare_tables.py ~/.cache/jaxserve-bench/results/<run>

Reads the load generator's JSON files in the run directory (`llama-server-F32.json`,
`llama-server-Q8_0.json`, `jaxserve-F32.json`, optionally `jaxserve-INT8.json`) and prints, per level,
output tok/s and TTFT p50 of each server, and the ratios: jaxserve float32 against llama-server F32,
and jaxserve int8 (W8A8) against llama-server Q8_0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PAIRS = (("F32", "F32"), ("INT8", "Q8_0"))
"""(jaxserve precision, llama-server precision) compared with each other."""


def levels(path: Path) -> dict[int, dict[str, Any]]:
    """Each concurrency level's summary in one load-generator JSON file."""
    document = json.loads(path.read_text())
    return {level["summary"]["concurrency"]: level["summary"] for level in document["levels"]}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def main(run_dir: str) -> None:
    directory = Path(run_dir)
    print("| precision (jaxserve vs llama-server) | concurrency | jaxserve tok/s | llama-server tok/s | ratio "
          "| jaxserve TTFT p50 ms | llama-server TTFT p50 ms | failed (j / l) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for ours, theirs in PAIRS:
        ours_path, theirs_path = (
            directory / f"jaxserve-{ours}.json",
            directory / f"llama-server-{theirs}.json",
        )
        if not ours_path.exists() or not theirs_path.exists():
            continue
        mine, other = levels(ours_path), levels(theirs_path)
        for concurrency in sorted(mine.keys() & other.keys()):
            a, b = mine[concurrency], other[concurrency]
            print(
                f"| {ours} vs {theirs} | {concurrency} | {a['output_throughput']:.1f} | {b['output_throughput']:.1f} "
                f"| {ratio(a['output_throughput'], b['output_throughput'])} | {ms(a['ttft_ms']['p50'])} "
                f"| {ms(b['ttft_ms']['p50'])} | {a['failed']} / {b['failed']} |"
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
