"""Structured outputs through the engine with the tiny random model: the grammar always holds.

The random model's vocabulary is 256 ids, fewer than its tokenizer's: the learned multi-byte tokens are
out of its reach. A byte the grammar forces comes as its canonical token, so forced text here only uses
bytes with no learned token of their own (brackets, quotes, most capitals); where the grammar leaves a
choice, byte tokens are allowed too. The mask is what makes the output valid:
a random model left alone produces none of this.
"""

from __future__ import annotations

import asyncio
import json
import re

from jaxserve.engine.async_engine import AsyncEngine
from jaxserve.engine.outputs import RequestOutput
from jaxserve.sampling.grammar import GrammarRequest
from jaxserve.sampling.params import SamplingParams
from tests.engine.conftest import EngineFactory, collect, prompt_ids, run
from tests.sampling.json_schema_check import schema_errors

SCHEMA = {
    "type": "object",
    "properties": {
        "W": {
            "type": "array",
            "maxItems": 4,
            "items": {
                "anyOf": [
                    {"type": "integer", "minimum": -50, "maximum": 99},
                    {"enum": ["QQ", "ZZ"]},
                    {
                        "type": "object",
                        "properties": {"V": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
                        "required": ["V"],
                        "additionalProperties": False,
                    },
                ]
            },
        }
    },
    "required": ["W"],
    "additionalProperties": False,
}
"""Nested objects, arrays, an enum and bounded integers, with one property per object: the comma
between two required properties would be forced, and a forced comma is the learned token ","."""


def constrained(engine: AsyncEngine, request: GrammarRequest, **params: object) -> SamplingParams:
    return SamplingParams(structured=engine.grammars.compile(request), **params)  # type: ignore[arg-type]


def test_json_schema_outputs_of_a_random_model_are_valid(make_engine: EngineFactory) -> None:
    engine = make_engine()
    request = GrammarRequest("json", "response_format", SCHEMA, whitespace_flexible=False)

    async def batch() -> list[RequestOutput]:
        return await asyncio.gather(
            *(
                collect(
                    engine,
                    prompt_ids(12, seed),
                    constrained(engine, request, seed=seed, max_tokens=100),
                    f"j{seed}",
                )
                for seed in range(6)
            )
        )

    for output in run(batch()):
        assert output.finish_reason == "stop", output.text
        assert schema_errors(json.loads(output.text), SCHEMA) == []


def test_greedy_regex_and_choice_outputs_match(make_engine: EngineFactory) -> None:
    engine = make_engine()
    regex = constrained(
        engine, GrammarRequest("regex", "p", "[-+][0-9]{3}[.!?]"), temperature=0.0, max_tokens=20
    )
    choice = constrained(
        engine, GrammarRequest("choice", "p", ["<<", ">>>", "!"]), temperature=0.0, max_tokens=20
    )
    regex_out = run(collect(engine, prompt_ids(9, 3), regex, "regex"))
    choice_out = run(collect(engine, prompt_ids(9, 4), choice, "choice"))
    assert re.fullmatch(r"[-+][0-9]{3}[.!?]", regex_out.text) and regex_out.finish_reason == "stop"
    assert choice_out.text in ("<<", ">>>", "!") and choice_out.finish_reason == "stop"


def test_max_tokens_cuts_a_grammar_short_with_length(make_engine: EngineFactory) -> None:
    engine = make_engine()
    params = constrained(engine, GrammarRequest("regex", "p", "[0-9]{30}"), seed=1, max_tokens=5)
    output = run(collect(engine, prompt_ids(9, 5), params, "short"))
    assert output.finish_reason == "length" and re.fullmatch("[0-9]{5}", output.text)


def test_preempted_constrained_sequences_resume_in_their_grammar(make_engine: EngineFactory) -> None:
    """Four 80-token sequences share 8 pages of 16: preempted and recomputed, they keep matching their
    grammar and produce exactly what they produce alone."""
    regex = "[0-9]{58}!"

    def cases(engine: AsyncEngine) -> list[tuple[list[int], SamplingParams]]:
        request = GrammarRequest("regex", "p", regex)
        return [
            (prompt_ids(20, 120 + i), constrained(engine, request, seed=i, max_tokens=60)) for i in range(4)
        ]

    roomy = make_engine(enable_prefix_caching=False)
    alone = [run(collect(roomy, p, s, f"alone-{i}")) for i, (p, s) in enumerate(cases(roomy))]
    tight = make_engine(num_pages=8, enable_prefix_caching=False)

    async def together() -> list[RequestOutput]:
        return await asyncio.gather(
            *(collect(tight, p, s, f"tight-{i}") for i, (p, s) in enumerate(cases(tight)))
        )

    outputs = run(together())
    assert tight.core.scheduler.num_preemptions > 0
    assert [o.token_ids for o in outputs] == [o.token_ids for o in alone]
    assert all(re.fullmatch(regex, o.text) and o.finish_reason == "stop" for o in outputs)
