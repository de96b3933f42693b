"""Per-step token bans that depend on what a sequence has generated: min_tokens and multi-token bad words.

They arrive at the sampler as cleared bits in the row's allowed-token bitmask, built here on the host
(a [W] int32 row, W = vocab / 32: copying it is far cheaper than any [vocab] work).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.bitmask import ban


def bad_word_token_ids(tokenizer: Tokenizer, bad_words: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Each bad word as token sequences, with and without a leading space (vLLM encodes both forms,
    since a word mid-sentence is usually tokenized with its space)."""
    found: list[tuple[int, ...]] = []
    for word in bad_words:
        for prefix in ("", " "):
            ids = tuple(tokenizer.encode(prefix + word.lstrip(), add_special_tokens=False))
            if ids and ids not in found:
                found.append(ids)
    return tuple(found)


def banned_now(
    output_ids: Sequence[int],
    bad_words: tuple[tuple[int, ...], ...],
    min_tokens: int,
    end_ids: frozenset[int],
    num_unseen: int = 0,
) -> list[int]:
    """Tokens the next sample may not be: EOS/stop ids before min_tokens, and each bad word's last token
    when the output ends with the rest of it (a one-token bad word is always banned).

    `num_unseen`: output tokens sampled after `output_ids` whose values the host does not know yet (a
    decode step dispatched ahead); only min_tokens can be judged then, so bad words must be absent."""
    if num_unseen and bad_words:
        raise ValueError("bad words need every output token on the host")
    banned: list[int] = []
    if len(output_ids) + num_unseen < min_tokens:
        banned.extend(end_ids)
    for word in bad_words:
        prefix = word[:-1]
        if not prefix or (len(output_ids) >= len(prefix) and tuple(output_ids[-len(prefix) :]) == prefix):
            banned.append(word[-1])
    return banned


def step_bitmask(base: np.ndarray | None, full: np.ndarray, banned: list[int]) -> np.ndarray | None:
    """The row's bitmask for this step: its allowed-token base (or None for all) minus `banned`."""
    if not banned:
        return base
    return ban(full if base is None else base, banned)
