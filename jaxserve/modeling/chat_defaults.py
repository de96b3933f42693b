"""What a GGUF file of a known architecture means when its metadata is silent about chat.

llama.cpp's converter copies a chat template only when the source repository has one, so conversions of
base checkpoints (e.g. google/gemma-3-270m) carry none, and older files do not mark the end-of-turn token.
For those architectures the model's published template and turn-end token are used instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class ChatDefaults:
    """A family's chat template and the token text that ends an assistant turn (generation stops there)."""

    chat_template: str
    end_of_turn: str


# Gemma 3's template, as published with google/gemma-3-*-it (tokenizer_config.json): a system message is
# folded into the first user turn; the assistant's role is spelled "model".
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

GGUF_CHAT_DEFAULTS: Mapping[str, ChatDefaults] = MappingProxyType(
    {"gemma3": ChatDefaults(chat_template=GEMMA3_CHAT_TEMPLATE, end_of_turn="<end_of_turn>")}
)
"""By GGUF `general.architecture`."""
