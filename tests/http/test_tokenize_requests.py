"""`/tokenize` and `/detokenize` bodies: which form a body is, the error each mistake gets, and the chat
form's mapping onto the chat-completions request it renders like."""

from __future__ import annotations

from typing import Any

import pytest

from jaxserve.errors import InvalidRequest
from jaxserve.http.protocol.tokenize import (
    DetokenizeRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeRequest,
)
from jaxserve.http.request_body import parse_body
from jaxserve.http.routes.tokenize import as_chat_request, check_token_ids
from jaxserve.http.translate.chat import chat_prompt

USER = [{"role": "user", "content": "hi"}]


def parse(body: dict[str, Any]) -> TokenizeCompletionRequest | TokenizeChatRequest:
    return parse_body(TokenizeRequest, body).root


def parse_error(body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    return caught.value


def test_a_prompt_body_is_the_prompt_form_with_vllms_defaults() -> None:
    form = parse({"prompt": "hello"})
    assert isinstance(form, TokenizeCompletionRequest)
    assert form.add_special_tokens is True and form.return_token_strs is False and form.model is None


def test_a_messages_body_is_the_chat_form_with_vllms_defaults() -> None:
    form = parse({"messages": USER, "model": "m"})
    assert isinstance(form, TokenizeChatRequest)
    assert form.add_generation_prompt is True and form.add_special_tokens is False
    assert form.continue_final_message is False and form.model == "m"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": USER, "add_generation_prompt": "maybe"}, "add_generation_prompt"),
    ],
)
def test_errors_name_the_field_of_the_form_meant(body: dict[str, Any], param: str) -> None:
    assert parse_error(body).param == param


def test_chat_form_maps_onto_the_chat_request_fields() -> None:
    form = parse(
        {
            "messages": USER,
            "add_generation_prompt": False,
            "continue_final_message": True,
            "add_special_tokens": True,
            "chat_template": "{{ messages[0].content }}",
            "chat_template_kwargs": {"enable_thinking": False},
        }
    )
    assert isinstance(form, TokenizeChatRequest)
    chat = as_chat_request(form)
    assert chat.messages == form.messages
    assert (chat.add_generation_prompt, chat.continue_final_message, chat.add_special_tokens) == (
        False,
        True,
        True,
    )
    assert chat.chat_template == "{{ messages[0].content }}"
    assert chat.chat_template_kwargs == {"enable_thinking": False}
    prompt = chat_prompt(chat)
    assert prompt.messages == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER, "continue_final_message": True}, "continue_final_message"),
        ({"messages": USER, "tools": []}, "tools"),
    ],
)
def test_chat_form_refusals_are_the_chat_endpoints(body: dict[str, Any], param: str) -> None:
    form = parse(body)
    assert isinstance(form, TokenizeChatRequest)
    with pytest.raises(InvalidRequest) as caught:
        chat_prompt(as_chat_request(form))
    assert caught.value.param == param


def test_detokenize_body() -> None:
    assert parse_body(DetokenizeRequest, {"tokens": [1, 2]}).tokens == [1, 2]
    with pytest.raises(InvalidRequest) as caught:
        parse_body(DetokenizeRequest, {"tokens": ["a"]})
    assert caught.value.param == "tokens.0"


@pytest.mark.parametrize("tokens", [[0, 99], []])
def test_ids_in_the_vocabulary_decode(tokens: list[int]) -> None:
    check_token_ids(tokens, vocab_size=100)


@pytest.mark.parametrize("tokens", [[100], [5, -1]])
def test_ids_outside_the_vocabulary_are_a_400(tokens: list[int]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_token_ids(tokens, vocab_size=100)
    assert caught.value.param == "tokens" and "out of vocabulary" in caught.value.message
