"""A sequence's bookkeeping of sampled tokens: text, stop decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxserve.engine.detokenizer import IncrementalDetokenizer
from jaxserve.engine.runner import RowOutput
from jaxserve.engine.sequence import Sequence
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.logprobs import TOP_LOGPROBS
from jaxserve.sampling.params import SamplingParams


def _byte_token(char: str) -> int:
    return 5 + ord(char)  # the tiny tokenizer's <0xHH> byte tokens start at id 5


def _sampled(token: int) -> RowOutput:
    return RowOutput(token, 0.0, 1, np.zeros(TOP_LOGPROBS, np.int32), np.zeros(TOP_LOGPROBS, np.float32))


def _feed(tokenizer: Tokenizer, params: SamplingParams, text: str) -> tuple[Sequence, list[object]]:
    seq = Sequence(
        request_id="r",
        prompt_ids=[5],
        params=params,
        seed=0,
        max_tokens=10,
        detokenizer=IncrementalDetokenizer(tokenizer, skip_special_tokens=True),
        emit=lambda output: None,
    )
    decisions = [seq.append_token(_sampled(_byte_token(c)), frozenset(), 100) for c in text]
    return seq, decisions


def test_stop_strings_are_not_checked_before_min_tokens(tiny_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_path(tiny_model_dir)
    _, early = _feed(tokenizer, SamplingParams(stop=("a",)), "ab")
    assert early[0] is not None and early[0].stop_reason == "a"
    seq, held = _feed(tokenizer, SamplingParams(stop=("a",), min_tokens=2), "aba")
    assert held[:2] == [None, None]  # the first "a" came before min_tokens: no stop (as vLLM)
    assert held[2] is not None and held[2].stop_reason == "a" and seq.text == "ab"
