"""jaxserve.modeling.template_sandbox: request-supplied chat templates render in worker processes, exactly as
transformers renders them in-process, and hostile ones get a 400 while the sandbox keeps serving."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jaxserve.errors import InvalidRequest, JaxserveError, ServerBusy
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.template_sandbox import SandboxLimits, TemplateSandbox
from jaxserve.modeling.tokenizer import Tokenizer

LIMITS = SandboxLimits(timeout_seconds=1.5, max_output_chars=100_000, max_template_chars=20_000)
DID_NOT_HANG_SECONDS = LIMITS.timeout_seconds + 30  # a replacement worker may still be importing (loaded CI)
MESSAGES = [{"role": "user", "content": "hi"}]
CANARY = "{{ messages[0]['content'] }}"


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[Tokenizer]:
    tokenizer = Tokenizer.from_path(default_model_path())
    tokenizer.use_template_sandbox(TemplateSandbox(LIMITS))
    yield tokenizer
    tokenizer.close()


def in_process(tokenizer: Tokenizer, messages: list[dict[str, Any]], template: str, **options: Any) -> str:
    """What transformers renders in this process for the same call (the path before the sandbox)."""
    options = {"add_generation_prompt": True, "continue_final_message": False, **options}
    return str(tokenizer.hf.apply_chat_template(messages, chat_template=template, tokenize=False, **options))


# ---------------------------------------------------------------------- legitimate templates

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Oslo? ünïcödé 中文 😀"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
    },
    {"role": "tool", "content": "-3 C"},
    {"role": "user", "content": "Thanks"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOL_TEMPLATE = """{{ bos_token }}{% if tools %}<tools>{{ tools | tojson(indent=2) }}</tools>
{% endif %}{% set ns = namespace(users=0) %}
{%- for m in messages %}
{%- if m.role not in ['system', 'user', 'assistant', 'tool'] %}{{ raise_exception('bad role ' ~ m.role) }}{% endif %}
{%- if m.role == 'system' %}{% continue %}{% endif %}
{%- if m.role == 'user' %}{% set ns.users = ns.users + 1 %}{% endif %}
<|{{ m.role }}|>{{ m.content | trim }}
{%- for call in m.tool_calls or [] %}<call>{{ call.function | tojson }}</call>{% endfor %}
{%- if loop.index > 10 %}{% break %}{% endif %}
{% endfor %}users={{ ns.users }}{{ dict(a=1) | tojson }}{% if add_generation_prompt %}<|assistant|>
{% endif %}"""
CONTINUE_TEMPLATE = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_the_models_own_template_sent_with_the_request_renders_identically(
    tokenizer: Tokenizer, add_generation_prompt: bool
) -> None:
    own = tokenizer.chat_template
    assert own is not None
    messages = CONVERSATION[:2]
    sandboxed = tokenizer.render_chat(
        messages, chat_template=own, add_generation_prompt=add_generation_prompt
    )
    assert tokenizer.template_sandbox.worker_pids()  # it did go through a worker
    assert sandboxed == in_process(tokenizer, messages, own, add_generation_prompt=add_generation_prompt)
    assert sandboxed == tokenizer.render_chat(messages, add_generation_prompt=add_generation_prompt)


def test_a_template_with_tools_loop_controls_and_globals_renders_identically(tokenizer: Tokenizer) -> None:
    sandboxed = tokenizer.render_chat(CONVERSATION, chat_template=TOOL_TEMPLATE, tools=TOOLS)
    assert sandboxed == in_process(tokenizer, CONVERSATION, TOOL_TEMPLATE, tools=TOOLS)
    assert "users=2" in sandboxed and '"city": "Oslo"' in sandboxed and "Be brief" not in sandboxed


def test_template_kwargs_and_continue_final_message_render_identically(tokenizer: Tokenizer) -> None:
    messages = [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2,"}]
    template = "{{ greeting }} " + CONTINUE_TEMPLATE
    options = {"add_generation_prompt": False, "continue_final_message": True}
    sandboxed = tokenizer.render_chat(
        messages, chat_template=template, template_kwargs={"greeting": "hey"}, **options
    )
    assert sandboxed == in_process(tokenizer, messages, template, greeting="hey", **options)
    assert sandboxed.endswith("[assistant] 1, 2,")


def test_raise_exception_in_a_request_template_is_a_400_on_messages(tokenizer: Tokenizer) -> None:
    template = "{% if messages[0].role != 'system' %}{{ raise_exception('system message first') }}{% endif %}"
    with pytest.raises(InvalidRequest, match="system message first") as info:
        tokenizer.render_chat(MESSAGES, chat_template=template)
    assert info.value.param == "messages"


def test_the_models_template_needs_no_worker(tokenizer: Tokenizer) -> None:
    fresh = Tokenizer(tokenizer.hf, eos_token_ids=tokenizer.eos_token_ids, template_sandbox=TemplateSandbox())
    try:
        assert fresh.render_chat(MESSAGES).endswith("<|im_start|>assistant\n")
        assert fresh.template_sandbox.worker_pids() == []
    finally:
        fresh.close()


def test_concurrent_renders_each_get_their_own_result(tokenizer: Tokenizer) -> None:
    results: dict[int, str] = {}

    def render(i: int) -> None:
        results[i] = tokenizer.render_chat([{"role": "user", "content": f"n{i}"}], chat_template=CANARY)

    threads = [threading.Thread(target=render, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DID_NOT_HANG_SECONDS)
    assert results == {i: f"n{i}" for i in range(8)}
    assert len(tokenizer.template_sandbox.worker_pids()) <= LIMITS.workers


# ---------------------------------------------------------------------- hostile templates

ESCAPES = {
    "str_mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler_globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum_globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "self_globals": "{{ self.__init__.__globals__ }}",
    "joiner_os": "{{ joiner.__init__.__globals__['os'].system('id') }}",
    "namespace_dunder": "{% set ns = namespace(__class__=1) %}",
}
FILE_ACCESS = {
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import '/etc/passwd' as passwd %}",
    "from_import": "{% from '/etc/passwd' import root %}",
    "extends": "{% extends '/etc/passwd' %}",
}
TIME_BOMBS = {
    "nested_loops_silent": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested_loops_writing": "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
    "exponential_macro": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
}
MEMORY_BOMBS = {
    "string_repeat": "{{ 'a' * 10**10 }}",
    "list_repeat": "{{ ([0] * 10**10) | length }}",
    "center_filter": "{{ 'x' | center(10**10) }}",
    "format_width": "{{ '{:>9999999999}'.format(1) }}",
}
OUTPUT_BOMBS = {
    "long_loop": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "one_long_string": "{{ 'x' * 200000 }}",
    "echoed_messages": "{% for i in range(10000) %}{{ messages }}{% endfor %}",
}
HOSTILE = [
    *((t, "templates may not use") for t in ESCAPES.values()),
    *((t, "cannot load files") for t in FILE_ACCESS.values()),
    *((t, "time limit") for t in TIME_BOMBS.values()),
    *((t, "memory limit") for t in MEMORY_BOMBS.values()),
    *((t, "output size limit") for t in OUTPUT_BOMBS.values()),
    ("{# padding #}" * 2000, "template size limit"),
]
HOSTILE_IDS = [*ESCAPES, *FILE_ACCESS, *TIME_BOMBS, *MEMORY_BOMBS, *OUTPUT_BOMBS, "oversized_source"]


@pytest.mark.parametrize(("template", "limit"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_template_is_a_400_naming_the_limit_and_the_sandbox_keeps_serving(
    tokenizer: Tokenizer, template: str, limit: str
) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as info:
        tokenizer.render_chat(MESSAGES, chat_template=template)
    assert time.monotonic() - started < DID_NOT_HANG_SECONDS
    assert info.value.param == "chat_template" and info.value.status == 400
    assert limit in info.value.message
    assert tokenizer.render_chat(MESSAGES, chat_template=CANARY) == "hi"


@pytest.mark.parametrize("read", ["lipsum.__globals__", "'{0.__class__}'.format('')"])
def test_reading_an_unsafe_attribute_yields_nothing(tokenizer: Tokenizer, read: str) -> None:
    # Jinja's sandbox answers a read of an unsafe attribute with an undefined value, which prints as "".
    assert tokenizer.render_chat(MESSAGES, chat_template="[{{ " + read + " }}]") == "[]"


def test_runaway_recursion_is_a_400(tokenizer: Tokenizer) -> None:
    template = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
    with pytest.raises(InvalidRequest, match="RecursionError") as info:
        tokenizer.render_chat(MESSAGES, chat_template=template)
    assert info.value.param == "chat_template"


def test_a_worker_killed_from_outside_is_replaced(tokenizer: Tokenizer) -> None:
    assert tokenizer.render_chat(MESSAGES, chat_template=CANARY) == "hi"
    for pid in tokenizer.template_sandbox.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)  # let the kernel deliver the signals
    assert tokenizer.render_chat(MESSAGES, chat_template=CANARY) == "hi"


def test_a_timed_out_worker_is_killed_and_reaped() -> None:
    with TemplateSandbox(SandboxLimits(timeout_seconds=1.0, workers=1)) as sandbox:
        assert sandbox.render(CANARY, MESSAGES, {}) == "hi"
        (first,) = sandbox.worker_pids()
        with pytest.raises(InvalidRequest, match="time limit"):
            sandbox.render(TIME_BOMBS["nested_loops_silent"], MESSAGES, {})
        assert first not in [p.pid for p in multiprocessing.active_children()]
        assert sandbox.render(CANARY, MESSAGES, {}) == "hi"
        assert sandbox.worker_pids() != [first]


def test_close_leaves_no_worker_processes_and_refuses_later_renders() -> None:
    sandbox = TemplateSandbox(SandboxLimits(workers=2))
    assert sandbox.worker_pids() == []  # started lazily
    assert sandbox.render(CANARY, MESSAGES, {}) == "hi"
    pids = sandbox.worker_pids()
    assert len(pids) == 1
    sandbox.close()
    assert sandbox.worker_pids() == []
    assert not set(pids) & {p.pid for p in multiprocessing.active_children()}
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # exited and reaped, not a zombie
            os.kill(pid, 0)
    with pytest.raises(ServerBusy):
        sandbox.render(CANARY, MESSAGES, {})


def test_a_worker_that_does_not_start_in_time_is_a_server_error_not_a_hang() -> None:
    others = {p.pid for p in multiprocessing.active_children()}  # e.g. the module fixture's workers
    with TemplateSandbox(SandboxLimits(startup_timeout_seconds=0.01, workers=1)) as sandbox:
        started = time.monotonic()
        with pytest.raises(JaxserveError) as info:
            sandbox.render(CANARY, MESSAGES, {})
        assert time.monotonic() - started < DID_NOT_HANG_SECONDS
        assert info.value.status == 500 and "could not start" in info.value.message
    assert {p.pid for p in multiprocessing.active_children()} <= others


@pytest.mark.parametrize(
    "fields",
    [
        {"timeout_seconds": 0},
        {"max_output_chars": 0},
        {"max_template_chars": -1},
        {"workers": 0},
        {"memory_bytes": 1 << 20},
    ],
)
def test_limits_are_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SandboxLimits(**fields)
