"""Many concurrent requests through the real server: each one gets exactly the reference answer."""

from __future__ import annotations

import asyncio
from typing import Any

import openai

from tests.e2e.conftest import RunningServer
from tests.modeling.parity import load_golden

GOLDEN_CASES = load_golden("smollm2_gguf.json")["cases"]
EOS_ID = 2  # <|im_end|>
MAX_TOKENS = 12
COPIES = 4  # 8 golden prompts x 4 = 32 requests in flight at once


def _golden_tokens(case: dict[str, Any]) -> list[int]:
    tokens = case["greedy_continuation"][:MAX_TOKENS]
    return tokens[: tokens.index(EOS_ID) + 1] if EOS_ID in tokens else tokens


def test_32_concurrent_requests_all_match_transformers(server: RunningServer) -> None:
    """32 greedy chats at once (more than the 4 running slots; repeated prompts share cached blocks):
    every one returns the transformers greedy tokens for its prompt, and later copies hit the cache."""

    async def main() -> list[Any]:
        async with openai.AsyncOpenAI(
            base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=600
        ) as client:
            return await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model=server.model,
                        messages=case["messages"],
                        temperature=0,
                        max_tokens=MAX_TOKENS,
                        extra_body={"return_token_ids": True},
                    )
                    for _ in range(COPIES)
                    for case in GOLDEN_CASES
                )
            )

    replies = asyncio.run(main())
    assert len(replies) == COPIES * len(GOLDEN_CASES) == 32
    cases = [case for _ in range(COPIES) for case in GOLDEN_CASES]
    for reply, case in zip(replies, cases, strict=True):
        choice = reply.choices[0]
        assert choice.model_extra["token_ids"] == _golden_tokens(case), case["name"]
        assert reply.model_extra["prompt_token_ids"] == case["prompt_ids"]
    # Each prompt came 4 times (and all share the template's system prompt): the copies hit the cache.
    cached = [reply.usage.prompt_tokens_details.cached_tokens for reply in replies]
    assert sum(1 for tokens in cached if tokens > 0) >= len(replies) - len(GOLDEN_CASES)
