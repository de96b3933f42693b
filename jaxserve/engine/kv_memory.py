"""How many KV-cache pages to allocate: from an explicit size, or a fraction of free device memory."""

from __future__ import annotations

import re
from pathlib import Path

import jax

_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from "4GiB", "512MiB", "1.5G", "800M" or a plain number of bytes."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a memory size: {text!r} (examples: 4GiB, 512MiB, 1.5G, 800000000)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def host_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (what the kernel can hand out without swapping)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("MemAvailable missing from /proc/meminfo")


def free_device_bytes(fraction: float) -> int:
    """`fraction` of this process's first device's memory minus what is already in use (weights, mostly),
    or on a CPU backend (no memory stats) `fraction` of the host's available memory."""
    stats = jax.local_devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        return int(fraction * stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return int(fraction * host_available_bytes())


def num_kv_pages(budget_bytes: int, page_bytes: int, *, at_least: int, at_most: int | None = None) -> int:
    """Pages that fit the budget, capped at `at_most`; an error below `at_least` (one full sequence)."""
    pages = budget_bytes // page_bytes
    if at_most is not None:
        pages = min(pages, at_most)
    if pages < at_least:
        raise ValueError(
            f"the KV cache budget of {budget_bytes / 2**20:.0f} MiB holds {max(pages, 0)} pages of "
            f"{page_bytes / 2**20:.2f} MiB, fewer than the {at_least} one sequence of --max-model-len tokens "
            "needs: raise --kv-cache-memory (or the memory fraction) or lower --max-model-len"
        )
    return pages


def stable_page_count(pages: int, at_least: int) -> int:
    """`pages` rounded down to four significant binary digits (under 1/9 fewer), never below `at_least`.

    The pool's size is part of every compiled step's shape. Sized from free memory, which drifts between
    restarts, it would change the programs each time and a warm start would find none of them stored;
    rounded, it stays put unless free memory moves by a whole step.
    """
    if pages <= at_least:
        return pages
    step = 1 << max(pages.bit_length() - 4, 0)
    return max(pages - pages % step, at_least)
