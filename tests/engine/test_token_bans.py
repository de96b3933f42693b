"""min_tokens and bad-word bans computed per step on the host."""

from __future__ import annotations

import numpy as np
import pytest

from jaxserve.engine.token_bans import bad_word_token_ids, banned_now, step_bitmask
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.bitmask import full_bitmask

END = frozenset({2, 7})


def test_min_tokens_bans_end_ids_until_reached() -> None:
    assert set(banned_now([5, 6], (), 3, END)) == END
    assert banned_now([5, 6, 8], (), 3, END) == []


def test_min_tokens_counts_tokens_sampled_but_not_yet_read() -> None:
    assert set(banned_now([5], (), 3, END, num_unseen=1)) == END
    assert banned_now([5, 6], (), 3, END, num_unseen=1) == []
    with pytest.raises(ValueError, match="bad words"):
        banned_now([5, 6], ((9,),), 0, END, num_unseen=1)


def test_single_token_bad_word_is_always_banned() -> None:
    assert banned_now([], ((42,),), 0, END) == [42]


def test_multi_token_bad_word_banned_only_after_its_prefix() -> None:
    word = ((10, 11, 12),)
    assert banned_now([1, 10], word, 0, END) == []
    assert banned_now([1, 10, 11], word, 0, END) == [12]
    assert banned_now([10, 11, 9], word, 0, END) == []


def test_bad_words_are_tokenized_with_and_without_leading_space() -> None:
    tokenizer = Tokenizer.from_path(default_model_path())
    forms = bad_word_token_ids(tokenizer, ["Paris"])
    assert tuple(tokenizer.encode("Paris", add_special_tokens=False)) in forms
    assert tuple(tokenizer.encode(" Paris", add_special_tokens=False)) in forms


def test_step_bitmask_clears_only_banned_bits() -> None:
    full = full_bitmask(100)
    assert step_bitmask(None, full, []) is None
    row = step_bitmask(None, full, [3, 64])
    assert row is not None
    bits = np.unpackbits(row.view(np.uint8), bitorder="little")[:100]
    assert [i for i in range(100) if not bits[i]] == [3, 64]
