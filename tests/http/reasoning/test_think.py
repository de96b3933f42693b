"""The <think> splitter behind deepseek_r1 and qwen3: where reasoning starts and ends, and streams that
add up to the whole-text split wherever the text is cut."""

from __future__ import annotations

import pytest

from jaxserve.http.reasoning.registry import REASONING_PARSERS, reasoning_parser
from jaxserve.http.reasoning.think import (
    ExtractedReasoning,
    PromptThinking,
    extract_reasoning,
    prompt_thinking,
)
from tests.http.tool_parsers.streaming import splits

PLAIN_PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
OPEN_PROMPT = "<｜User｜>hi<｜Assistant｜><think>\n"
CLOSED_PROMPT = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def split(parser: str, prompt: str, text: str) -> ExtractedReasoning:
    """The whole-text split, checked against every way of streaming the same text."""
    expected = extract_reasoning(reasoning_parser(parser).stream(prompt), text)
    for pieces in splits(text):
        stream = reasoning_parser(parser).stream(prompt)
        deltas = [stream.feed(piece) for piece in pieces] + [stream.finish()]
        reasoning = "".join(d.reasoning for d in deltas)
        content = "".join(d.content for d in deltas)
        assert (reasoning or None) == expected.reasoning, pieces
        assert content == (expected.content or ""), pieces
    return expected


@pytest.mark.parametrize("parser", sorted(REASONING_PARSERS))
def test_a_think_block_is_split_off_and_its_tags_dropped(parser: str) -> None:
    result = split(parser, PLAIN_PROMPT, "<think>\nAdd them.\n</think>\n\nThe sum is 4.")
    assert result == ExtractedReasoning(reasoning="\nAdd them.\n", content="\n\nThe sum is 4.")


def test_deepseek_r1_output_may_lack_the_opening_tag() -> None:
    assert split("deepseek_r1", PLAIN_PROMPT, "Add them.</think>4") == ExtractedReasoning("Add them.", "4")


def test_deepseek_r1_without_an_end_tag_is_all_reasoning() -> None:
    """vLLM: the output was cut before the reasoning ended."""
    assert split("deepseek_r1", PLAIN_PROMPT, "Still thinking") == ExtractedReasoning("Still thinking", None)


def test_qwen3_without_a_block_is_all_content() -> None:
    assert split("qwen3", PLAIN_PROMPT, "Just 4.") == ExtractedReasoning(None, "Just 4.")
    assert split("qwen3", PLAIN_PROMPT, "4 </think>") == ExtractedReasoning(None, "4 </think>")


@pytest.mark.parametrize("parser", sorted(REASONING_PARSERS))
def test_a_prompt_that_opens_the_block_starts_in_reasoning(parser: str) -> None:
    assert split(parser, OPEN_PROMPT, "Add.\n</think>\n\n4") == ExtractedReasoning("Add.\n", "\n\n4")


@pytest.mark.parametrize("parser", sorted(REASONING_PARSERS))
def test_a_prompt_that_closes_the_block_means_no_reasoning(parser: str) -> None:
    """Qwen3's enable_thinking=false template writes an empty block itself (vLLM: reasoning ended in the
    prompt)."""
    assert split(parser, CLOSED_PROMPT, "4") == ExtractedReasoning(None, "4")


@pytest.mark.parametrize("parser", sorted(REASONING_PARSERS))
def test_only_the_first_block_counts(parser: str) -> None:
    result = split(parser, PLAIN_PROMPT, "<think>a</think>b<think>c</think>")
    assert result == ExtractedReasoning("a", "b<think>c</think>")


@pytest.mark.parametrize("parser", sorted(REASONING_PARSERS))
def test_empty_block_and_empty_answer(parser: str) -> None:
    assert split(parser, PLAIN_PROMPT, "<think></think>") == ExtractedReasoning(None, None)


def test_partial_tags_are_held_until_decided() -> None:
    stream = reasoning_parser("qwen3").stream(PLAIN_PROMPT)
    assert not stream.feed(" <thi")
    delta = stream.feed("nk>Hmm </thi")
    assert (delta.reasoning, delta.content) == ("Hmm ", "")
    delta = stream.feed("s")
    assert delta.reasoning == "</this"
    delta = stream.feed("</think>Done")
    assert (delta.reasoning, delta.content) == ("", "Done")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (PLAIN_PROMPT, PromptThinking.NONE),
        (OPEN_PROMPT, PromptThinking.OPEN),
        (CLOSED_PROMPT, PromptThinking.CLOSED),
        ("<think>x</think> then text", PromptThinking.NONE),
    ],
)
def test_prompt_thinking_reads_the_end_of_the_prompt(prompt: str, expected: PromptThinking) -> None:
    assert prompt_thinking(prompt) is expected


def test_unknown_parser_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="deepseek_r1, qwen3"):
        reasoning_parser("granite")
