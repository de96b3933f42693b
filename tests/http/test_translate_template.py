"""Chat-template options taken from the request."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.errors import InvalidRequest, UnsupportedField
from jaxserve.http.protocol import ChatCompletionRequest
from jaxserve.http.translate.template import ChatTemplateArgs, chat_template_args


def args(**fields: Any) -> ChatTemplateArgs:
    return chat_template_args(ChatCompletionRequest.model_validate({"messages": [], **fields}))


def test_defaults_ask_for_a_new_assistant_turn() -> None:
    assert args() == ChatTemplateArgs(add_generation_prompt=True, continue_final_message=False)


def test_continue_final_message_with_generation_prompt_is_refused() -> None:
    # add_generation_prompt defaults to true, so continuing alone is the combination vLLM refuses.
    for fields in (
        {"continue_final_message": True},
        {"continue_final_message": True, "add_generation_prompt": True},
    ):
        with pytest.raises(InvalidRequest) as caught:
            args(**fields)
        assert caught.value.param == "continue_final_message"
        assert caught.value.status == 400


def test_continue_final_message_without_generation_prompt_is_accepted() -> None:
    result = args(continue_final_message=True, add_generation_prompt=False)
    assert result.continue_final_message and not result.add_generation_prompt


def test_template_options_are_passed_on() -> None:
    result = args(
        chat_template="{{ messages }}",
        chat_template_kwargs={"enable_thinking": False},
        documents=[{"title": "t", "text": "x"}],
        add_special_tokens=True,
    )
    assert result == ChatTemplateArgs(
        add_special_tokens=True,
        chat_template="{{ messages }}",
        documents=[{"title": "t", "text": "x"}],
        template_kwargs={"enable_thinking": False},
    )


def test_tools_smuggled_through_template_kwargs_are_refused() -> None:
    with pytest.raises(UnsupportedField) as caught:
        args(chat_template_kwargs={"tools": [{"type": "function", "function": {"name": "f"}}]})
    assert caught.value.param == "chat_template_kwargs.tools"
