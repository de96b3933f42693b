"""The field-support table covers the spec, and unsupported fields are refused by name."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from jaxserve.errors import UnsupportedField
from jaxserve.http.field_support import FIELD_SUPPORT, Support, check_field_support
from jaxserve.http.protocol import ChatCompletionRequest
from tests.http.spec_properties import SPEC_FILE, SPEC_PROPERTIES, read_request_properties

MESSAGES = [{"role": "user", "content": "hi"}]

# A value for every not-yet-supported field that asks for something (so must be refused).
ACTIVE_VALUES: dict[str, Any] = {
    "mm_processor_kwargs": {"fps": 2},
    "logits_processors": ["my.module.Processor"],
    "kv_transfer_params": {"do_remote_prefill": True},
}

NOT_YET = [name for name, policy in FIELD_SUPPORT.items() if policy.support is not Support.SUPPORTED]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})


def test_copied_property_list_matches_the_spec_file() -> None:
    if not SPEC_FILE.is_file():
        pytest.skip(f"spec not found at {SPEC_FILE}")
    assert read_request_properties(SPEC_FILE.read_text(encoding="utf-8")) == list(SPEC_PROPERTIES)


def test_every_spec_property_is_in_the_support_table() -> None:
    missing = [name for name in SPEC_PROPERTIES if name not in FIELD_SUPPORT]
    unknown = [name for name in FIELD_SUPPORT if name not in SPEC_PROPERTIES]
    assert not missing, f"spec properties with no support decision: {missing}"
    assert not unknown, f"table entries that are not spec properties: {unknown}"
    assert all(
        policy.support in (Support.SUPPORTED, Support.NOT_YET, Support.REFUSED)
        for policy in FIELD_SUPPORT.values()
    )
    assert list(FIELD_SUPPORT) == list(SPEC_PROPERTIES), "keep the table in the spec's order"


def test_request_model_has_exactly_the_spec_properties() -> None:
    assert list(ChatCompletionRequest.model_fields) == list(SPEC_PROPERTIES)


def test_every_not_yet_field_has_an_active_test_value() -> None:
    assert sorted(ACTIVE_VALUES) == sorted(NOT_YET)


@pytest.mark.parametrize("name", NOT_YET)
def test_setting_an_unsupported_field_is_refused_by_name(name: str) -> None:
    with pytest.raises(UnsupportedField) as caught:
        check_field_support(request(**{name: ACTIVE_VALUES[name]}))
    assert caught.value.param == name
    assert caught.value.status == 400
    assert caught.value.message == f"'{name}' {FIELD_SUPPORT[name].reason}"


def test_a_request_with_only_messages_is_accepted() -> None:
    check_field_support(request())


@pytest.mark.parametrize("name", [n for n in SPEC_PROPERTIES if n != "messages"])
def test_the_spec_default_is_accepted_when_sent_explicitly(name: str) -> None:
    default = ChatCompletionRequest.model_fields[name].get_default(call_default_factory=True)
    check_field_support(request(**{name: default}))


NULLABLE = [n for n, f in ChatCompletionRequest.model_fields.items() if type(None) in get_args(f.annotation)]


def test_nullability_follows_the_spec() -> None:
    # The spec's non-nullable properties that have a default. bad_words and request_id are non-nullable
    # too but have no default, so (like every optional property without one) null means "absent".
    not_nullable = {n for n in SPEC_PROPERTIES if n not in NULLABLE}
    assert not_nullable == {
        "messages", "include_reasoning", "use_beam_search", "length_penalty", "include_stop_str_in_output",
        "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens", "echo",
        "add_generation_prompt", "continue_final_message", "add_special_tokens", "priority",
    }  # fmt: skip


@pytest.mark.parametrize("name", NULLABLE)
def test_null_is_accepted_for_nullable_fields(name: str) -> None:
    check_field_support(request(**{name: None}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("tools", []),
        ("tool_choice", "none"),
        ("response_format", {"type": "text"}),
        ("logits_processors", []),
    ],
)
def test_values_that_ask_for_nothing_are_accepted(name: str, value: Any) -> None:
    check_field_support(request(**{name: value}))


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 4},
        {"use_beam_search": True, "n": 3, "length_penalty": 0.5},
        {"priority": 5},
        {"cache_salt": "pepper"},
    ],
)
def test_fields_checked_elsewhere_pass_the_table(fields: dict[str, Any]) -> None:
    """n's range, beam search combinations and priority against the scheduling policy are checked
    by the translation layer (tests in test_app_errors), not by the table."""
    check_field_support(request(**fields))


def test_streaming_is_accepted() -> None:
    check_field_support(request(stream=True, stream_options={"include_usage": True}))


def test_first_unsupported_field_in_spec_order_is_named() -> None:
    with pytest.raises(UnsupportedField) as caught:
        check_field_support(
            request(vllm_xargs={"a": 1}, kv_transfer_params={"x": 1}, logits_processors=["m.P"], tools=[])
        )
    assert caught.value.param == "logits_processors"
    with pytest.raises(UnsupportedField) as caught:
        check_field_support(request(logits_processors=["m.P"], mm_processor_kwargs={"fps": 2}))
    assert caught.value.param == "mm_processor_kwargs"


def test_unknown_top_level_fields_are_ignored() -> None:
    parsed = request(some_other_servers_option=3)
    check_field_support(parsed)
    assert not hasattr(parsed, "some_other_servers_option")
