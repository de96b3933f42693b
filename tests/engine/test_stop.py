"""Stop tokens, EOS, stop strings and the streaming hold-back."""

from __future__ import annotations

from jaxserve.engine.stop import check_stop_strings, check_token, stop_string_holdback
from jaxserve.sampling.params import SamplingParams

EOS = frozenset({2})


def test_eos_stops_without_stop_reason() -> None:
    decision = check_token(2, SamplingParams(), EOS)
    assert decision is not None and decision.finish_reason == "stop" and decision.stop_reason is None


def test_ignore_eos_keeps_going() -> None:
    assert check_token(2, SamplingParams(ignore_eos=True), EOS) is None


def test_stop_token_id_is_the_stop_reason() -> None:
    decision = check_token(17, SamplingParams(stop_token_ids=(17,)), EOS)
    assert decision is not None and decision.stop_reason == 17


def test_stop_string_is_excluded_by_default() -> None:
    params = SamplingParams(stop=("END",))
    decision = check_stop_strings("hello END there", len(" END there"), params)
    assert (
        decision is not None and decision.stop_reason == "END" and decision.truncate_text_at == len("hello ")
    )


def test_stop_string_included_on_request() -> None:
    params = SamplingParams(stop=("END",), include_stop_str_in_output=True)
    decision = check_stop_strings("hello END", 4, params)
    assert decision is not None and decision.truncate_text_at == len("hello END")


def test_stop_string_spanning_tokens_is_found() -> None:
    params = SamplingParams(stop=("abc",))
    assert check_stop_strings("xxab", 2, params) is None
    decision = check_stop_strings("xxabc", 1, params)
    assert decision is not None and decision.truncate_text_at == 2


def test_earliest_of_several_stop_strings_wins() -> None:
    params = SamplingParams(stop=("world", "lo"))
    decision = check_stop_strings("hello world", 11, params)
    assert decision is not None and decision.stop_reason == "lo"


def test_holdback_is_longest_stop_minus_one() -> None:
    assert stop_string_holdback(SamplingParams()) == 0
    assert stop_string_holdback(SamplingParams(stop=("a", "abcd"))) == 3
    assert stop_string_holdback(SamplingParams(stop=("abcd",), include_stop_str_in_output=True)) == 0
