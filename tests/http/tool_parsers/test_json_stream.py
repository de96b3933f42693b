"""The incremental JSON rewriter: json.dumps spacing, whatever the pieces, and errors for non-JSON."""

from __future__ import annotations

import json

import pytest

from jaxserve.http.tool_parsers.json_stream import JsonRewriter, JsonSyntaxError, rewrite_json

VALUES = [
    '{"city":"Paris","days":[1,2,{"x":null}],"ok":true,"f":false,"e":{},"a":[]}',
    '  {"nested": {"deep": [[1], [2, [3]]]}}  ',
    '"just a string"',
    "42",
    "-0.5e-3",
    "[]",
    '{"q": "tab\\tquote\\"slash\\/back\\\\\\u00e9\\ud83d\\ude00"}',
    '{"k" : 1 , "l":[ 1 ,2 ] }',
]


@pytest.mark.parametrize("text", VALUES)
def test_rewrite_matches_json_dumps_spacing(text: str) -> None:
    value = json.loads(text)
    rewritten = rewrite_json(text)
    assert json.loads(rewritten) == value
    if "e-3" not in text:  # numbers are kept as written, json.dumps would reformat this one
        assert rewritten == json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("text", VALUES)
def test_any_split_gives_the_same_text(text: str) -> None:
    expected = rewrite_json(text)
    for cut in range(len(text) + 1):
        rewriter, out = JsonRewriter(), []
        for piece in (text[:cut], text[cut:]):
            for char in piece:
                rewriter.push(char)
            out.append(rewriter.take())
        rewriter.finish()
        out.append(rewriter.take())
        assert "".join(out) == expected


def test_text_is_written_as_soon_as_it_is_certain() -> None:
    rewriter = JsonRewriter()
    for char in '{"city": "Pa':
        rewriter.push(char)
    assert rewriter.take() == '{"city": "Pa'
    for char in 'ris", "n": 12':
        rewriter.push(char)
    assert rewriter.take() == 'ris", "n": '  # the number may go on
    rewriter.push("}")
    assert rewriter.take() == "12}"
    assert rewriter.complete


def test_the_character_after_the_value_is_not_consumed() -> None:
    rewriter = JsonRewriter()
    assert all(rewriter.push(char) for char in "[1]")
    assert rewriter.complete and not rewriter.push(";")


def test_raw_control_characters_in_strings_are_escaped() -> None:
    assert rewrite_json('{"s": "line\nbreak"}') == '{"s": "line\\nbreak"}'


@pytest.mark.parametrize(
    "text",
    ['{"a" 1}', '{"a": 01}', "[1,]", "{,}", "tru", '{"a": 1}}', '"\\x"', '"\\u12g4"', "{", '{"a": 1,}'],
)
def test_malformed_json_is_an_error(text: str) -> None:
    with pytest.raises(JsonSyntaxError):
        rewrite_json(text)
