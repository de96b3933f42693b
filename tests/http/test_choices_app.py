"""`n` choices, beam search, priority and cache_salt through the real application, over a scripted
engine: what each choice's engine request is given, how choices come back (whole and streamed), and
that a failing choice or a departing client ends every engine request of the request.

The engine here is a stand-in that only replays outputs (the real engine is exercised by
tests/engine and tests/e2e); the tokenizer and chat template are the default model's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jaxserve.engine.outputs import RequestOutput, TokenLogprob
from jaxserve.errors import EngineFault
from jaxserve.http.app import build_app
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from jaxserve.sampling.params import SamplingParams

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_path(default_model_path())


@dataclass
class Call:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int
    cache_salt: str | None


@dataclass
class ScriptedEngine:
    """Generates `length` tokens per request, token t = 1000 + 10 * (seed % 7) + t, one output per token
    with `delay` seconds between them; requests whose id ends with a suffix in `fail` raise EngineFault
    after their first output. With logprobs asked for, the top list depends on the prompt's last token,
    so beam search sees a deterministic distribution."""

    tokenizer: Tokenizer
    length: int = 3
    delay: float = 0.0
    fail: tuple[str, ...] = ()
    scheduling_policy: str = "fcfs"
    max_model_len: int = 2048
    calls: list[Call] = field(default_factory=list)
    aborted: set[str] = field(default_factory=set)

    def is_healthy(self) -> bool:
        return True

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        self.calls.append(Call(request_id, list(prompt_token_ids), params, priority, cache_salt))
        base = 1000 + 10 * ((params.seed or 0) % 7)
        count = min(self.length, params.max_tokens or self.length)
        tokens: tuple[int, ...] = ()
        entries: tuple[TokenLogprob, ...] = ()
        done = False
        try:
            for t in range(count):
                if t and self.delay:
                    await asyncio.sleep(self.delay)
                if t == 1 and request_id.endswith(self.fail):
                    raise EngineFault("the scripted engine failed")
                token = base + t
                tokens += (token,)
                if params.logprobs is not None:
                    shift = prompt_token_ids[-1] % 5
                    top = tuple(
                        (300 + shift + j, -0.1 * (j + 1) - 0.01 * shift) for j in range(params.logprobs)
                    )
                    token = top[0][0] if top else token
                    tokens = tokens[:-1] + (token,)
                    entries += (TokenLogprob(token, top[0][1] if top else -1.0, 1, top),)
                done = t == count - 1
                yield RequestOutput(
                    request_id=request_id,
                    prompt_token_ids=tuple(prompt_token_ids),
                    text="".join(f"<{x}>" for x in tokens),
                    token_ids=tokens,
                    delta_text=f"<{token}>",
                    delta_token_ids=(token,),
                    finished=done,
                    finish_reason="length" if done else None,
                    logprobs=entries if params.logprobs is not None else None,
                    num_cached_tokens=len(self.calls) - 1 if done else 0,
                )
        finally:
            if not done:
                self.aborted.add(request_id)


def post(engine: ScriptedEngine, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async def run() -> tuple[int, Any]:
        app = build_app(engine, served_model_names=["smol"])  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            response = await client.post(path, json=body)
            raw = await response.read()
            if response.content_type == "text/event-stream":
                return response.status, [
                    json.loads(line[len("data: ") :])
                    for line in raw.decode().split("\n\n")
                    if line.startswith("data: {")
                ]
            return response.status, json.loads(raw)

    return asyncio.run(run())


def test_n_choices_are_n_engine_requests_seeded_seed_plus_i(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(tokenizer)
    body = {"messages": MESSAGES, "n": 3, "seed": 40, "priority": 0, "cache_salt": "salt", "max_tokens": 3}
    status, reply = post(engine, CHAT, body)
    assert status == 200
    assert [call.params.seed for call in engine.calls] == [40, 41, 42]
    assert len({call.request_id for call in engine.calls}) == 3
    assert all(call.cache_salt == "salt" and call.priority == 0 for call in engine.calls)
    assert all(call.params.n == 1 and "cache_salt" not in call.params.extra for call in engine.calls)
    assert all(call.prompt_token_ids == engine.calls[0].prompt_token_ids for call in engine.calls)
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in reply["choices"]] == [
        "<1050><1051><1052>",
        "<1060><1061><1062>",
        "<1000><1001><1002>",
    ]
    prompt_tokens = len(engine.calls[0].prompt_token_ids)
    assert reply["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 9,
        "total_tokens": prompt_tokens + 9,
        "prompt_tokens_details": {"cached_tokens": reply["usage"]["prompt_tokens_details"]["cached_tokens"]},
    }


def test_priority_reaches_the_engine_under_the_priority_policy(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(tokenizer, scheduling_policy="priority")
    status, _ = post(engine, CHAT, {"messages": MESSAGES, "n": 2, "priority": -4})
    assert status == 200 and [call.priority for call in engine.calls] == [-4, -4]
    status, _ = post(engine, "/v1/completions", {"prompt": "hi", "priority": 9, "cache_salt": "s"})
    assert status == 200 and (engine.calls[-1].priority, engine.calls[-1].cache_salt) == (9, "s")


def test_streamed_choices_interleave_and_each_finishes(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(tokenizer, delay=0.01)
    body = {
        "messages": MESSAGES,
        "n": 2,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, chunks = post(engine, CHAT, body)
    assert status == 200
    assert [c["choices"][0]["delta"].get("role") for c in chunks[:2]] == ["assistant", "assistant"]
    body_chunks = [c["choices"][0] for c in chunks[2:-1]]
    indices = [c["index"] for c in body_chunks]
    assert sorted(indices) == [0, 0, 0, 1, 1, 1] and indices != [0, 0, 0, 1, 1, 1], "interleaved"
    for index, seed in ((0, 1), (1, 2)):
        mine = [c for c in body_chunks if c["index"] == index]
        tokens = [1000 + 10 * seed + t for t in range(3)]
        assert "".join(c["delta"]["content"] for c in mine) == "".join(f"<{t}>" for t in tokens)
        assert [c["finish_reason"] for c in mine] == [None, None, "length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_choice_fails_the_request_and_aborts_the_others(tokenizer: Tokenizer, stream: bool) -> None:
    engine = ScriptedEngine(tokenizer, length=50, delay=0.01, fail=("-1",))
    status, reply = post(engine, CHAT, {"messages": MESSAGES, "n": 3, "stream": stream})
    if stream:
        assert status == 200 and reply[-1]["error"]["type"] == "internal_error"
    else:
        assert status == 500 and reply["error"]["type"] == "internal_error"
    others = {call.request_id for call in engine.calls if not call.request_id.endswith("-1")}
    assert len(others) == 2 and others <= engine.aborted


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_aborts_every_choice(tokenizer: Tokenizer, stream: bool) -> None:
    engine = ScriptedEngine(tokenizer, length=10_000, delay=0.01)

    async def run() -> None:
        app = build_app(engine, served_model_names=["smol"])  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            body = {"messages": MESSAGES, "n": 3, "stream": stream}
            if stream:
                response = await client.post(CHAT, json=body)
                await response.content.readuntil(b"\n\n")
                response.close()
            else:  # no response before the answer is complete: leave while waiting for it
                waiting = asyncio.ensure_future(client.post(CHAT, json=body))
                await asyncio.sleep(0.3)
                waiting.cancel()
            for _ in range(300):
                if len(engine.aborted) == 3:
                    return
                await asyncio.sleep(0.01)

    asyncio.run(run())
    assert engine.aborted == {call.request_id for call in engine.calls} and len(engine.calls) == 3


def test_completions_return_n_choices_per_prompt_in_prompt_order(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(tokenizer)
    status, reply = post(
        engine, "/v1/completions", {"prompt": ["a", "b"], "n": 2, "seed": 3, "max_tokens": 2}
    )
    assert status == 200
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    assert [call.params.seed for call in engine.calls] == [3, 4, 3, 4]
    assert [c["text"] for c in reply["choices"]] == ["<1030><1031>", "<1040><1041>"] * 2
    assert reply["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("path", [CHAT, "/v1/completions"])
def test_beam_search_answers_with_n_beams(tokenizer: Tokenizer, path: str) -> None:
    engine = ScriptedEngine(tokenizer, scheduling_policy="priority")
    prompt: dict[str, Any] = {"messages": MESSAGES} if path == CHAT else {"prompt": "hi"}
    body = {**prompt, "use_beam_search": True, "n": 2, "max_tokens": 3, "ignore_eos": True, "priority": 2}
    status, reply = post(engine, path, {**body, "cache_salt": "s", "temperature": 0.9})
    assert status == 200
    assert len(reply["choices"]) == 2 and [c["index"] for c in reply["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in reply["choices"])
    # One step request per live beam per token: 1 + 2 + 2, each asking for the top 2n tokens.
    assert len(engine.calls) == 5
    assert all(call.params.max_tokens == 1 and call.params.logprobs == 4 for call in engine.calls)
    assert all((call.priority, call.cache_salt) == (2, "s") for call in engine.calls)
    assert reply["usage"]["completion_tokens"] == 6


def test_streamed_beam_search_sends_each_beam_whole(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(tokenizer)
    body = {"messages": MESSAGES, "use_beam_search": True, "n": 2, "max_tokens": 3, "stream": True}
    status, chunks = post(engine, CHAT, {**body, "ignore_eos": True, "logprobs": True, "top_logprobs": 1})
    assert status == 200
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"].get("role")) for c in chunks[:2]] == [
        (0, "assistant"),
        (1, "assistant"),
    ]
    whole = [c["choices"][0] for c in chunks[2:]]
    assert [(c["index"], c["finish_reason"]) for c in whole] == [(0, "length"), (1, "length")]
    assert all(len(c["logprobs"]["content"]) == 3 for c in whole)
    assert whole[0]["delta"]["content"] != whole[1]["delta"]["content"]
