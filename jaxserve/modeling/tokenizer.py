"""The server's tokenizer: a transformers fast tokenizer built from a GGUF file or an HF checkpoint dir.

Everything that turns text into ids or ids into text goes through `Tokenizer`, so the rules the rest of the
server relies on live in one place: which ids end generation, whether BOS is added, how a chat is rendered
(vLLM's rules: render the template to text, then encode it without adding special tokens, because the template
writes BOS itself where the model wants one) and how template failures become 400 errors. A template sent
with a request is untrusted: it renders in the template sandbox (jaxserve.modeling.template_sandbox), under
time, memory and size limits; the model's own template renders in-process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxserve.errors import InvalidRequest, ModelLoadError
from jaxserve.modeling.chat_defaults import GGUF_CHAT_DEFAULTS
from jaxserve.modeling.template_failures import failure_of, invalid_request
from jaxserve.modeling.template_sandbox import TemplateSandbox

_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
"""Any of these in a directory means transformers can build a tokenizer from it."""

_GGUF_MAGIC = b"GGUF"

_RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "conversation",
        "messages",
        "chat_template",
        "tokenize",
        "sanitize_control_tokens",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
    }
)
"""Arguments of transformers' `apply_chat_template` that are not template variables; a request may not set
them through `chat_template_kwargs` (vLLM rejects `tokenize` and `chat_template` the same way)."""

_BYTE_FALLBACK_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
"""Sentencepiece's byte-fallback spelling of a raw byte, e.g. `<0x0A>` for a newline."""

_SENTENCEPIECE_SPACE = "\u2581"


class Tokenizer:
    """A transformers fast tokenizer plus the facts about it the engine needs (EOS ids, BOS, chat template).

    Not a frozen dataclass: it caches the bytes of tokens it has been asked about, since the grammar matcher
    and logprob output ask about the same tokens again and again.
    """

    def __init__(
        self, hf: Any, *, eos_token_ids: Iterable[int], template_sandbox: TemplateSandbox | None = None
    ) -> None:
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise ModelLoadError(
                f"tokenizer class {type(hf).__name__} has no fast (tokenizers) backend; jaxserve needs one"
            )
        self.hf = hf
        self._backend = backend
        self.eos_token_ids: frozenset[int] = frozenset(int(i) for i in eos_token_ids)
        self.bos_token_id: int | None = hf.bos_token_id
        self.vocab_size: int = len(hf)
        self.chat_template: str | None = _default_template(hf.chat_template)
        added = hf.added_tokens_decoder  # the backend's added tokens: what its decode treats specially
        self._added_tokens: dict[int, str] = {i: token.content for i, token in added.items()}
        # Exactly the ids the backend's decode drops under skip_special_tokens (it alone does the skipping).
        self._special_ids: frozenset[int] = frozenset(i for i, token in added.items() if token.special)
        decoder_types = _decoder_types(backend.decoder)
        self._byte_level = "ByteLevel" in decoder_types
        self._byte_fallback = "ByteFallback" in decoder_types
        self._byte_of_char = {char: byte for byte, char in _byte_level_alphabet().items()}
        self._bytes_cache: dict[int, bytes] = {}
        # Starts no process until a request brings its own template; the server swaps in its configured one.
        self.template_sandbox = template_sandbox or TemplateSandbox()

    def use_template_sandbox(self, sandbox: TemplateSandbox) -> None:
        """Render request-supplied templates in `sandbox` from now on (the previous one is closed)."""
        previous, self.template_sandbox = self.template_sandbox, sandbox
        if previous is not sandbox:
            previous.close()

    def close(self) -> None:
        """Stop the template sandbox's worker processes (the tokenizer stays usable for everything else)."""
        self.template_sandbox.close()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_path(cls, path: str | Path) -> Tokenizer:
        """Load from a `.gguf` file, or from a Hugging Face checkpoint directory (or one holding one GGUF)."""
        path = Path(path)
        if not path.exists():
            raise ModelLoadError(f"cannot load a tokenizer: {path} does not exist")
        if path.is_file():
            if not _is_gguf(path):
                raise ModelLoadError(
                    f"cannot load a tokenizer from {path}: not a GGUF file (pass a .gguf file or a directory "
                    "with tokenizer.json / tokenizer_config.json)"
                )
            return cls._from_gguf(path)
        if any((path / name).is_file() for name in _HF_TOKENIZER_FILES):
            return cls._from_hf_dir(path)
        ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if len(ggufs) == 1:
            return cls._from_gguf(ggufs[0])
        found = f"{len(ggufs)} .gguf files" if ggufs else "no .gguf file"
        raise ModelLoadError(
            f"no tokenizer found in {path}: it has none of {', '.join(_HF_TOKENIZER_FILES)} and {found} "
            "(need exactly one)"
        )

    @classmethod
    def _from_gguf(cls, path: Path) -> Tokenizer:
        """Read the tokenizer metadata of a GGUF file."""
        from jaxserve.modeling.gguf_file import GGUFFile

        return cls.from_gguf_metadata(GGUFFile(path).metadata, source=str(path))

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], *, source: str = "GGUF file") -> Tokenizer:
        """Build from GGUF key/values already decoded to Python values, the way transformers does.

        Lets the model loader, which reads the whole file's metadata anyway, share it. transformers' own GGUF entry points
        (`AutoTokenizer.from_pretrained(gguf_file=...)`) read the file with a reader that imports torch, so
        the metadata is mapped here and handed to transformers' torch-free `convert_gguf_tokenizer`.
        """
        from transformers import PreTrainedTokenizerFast
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )

        def group(name: str) -> dict[str, Any]:
            renames = GGUF_TOKENIZER_MAPPING[name]
            values = {new: metadata.get(f"tokenizer.{old}") for old, new in renames.items()}
            return {k: v for k, v in values.items() if v is not None}

        tokenizer_dict, config = group("tokenizer"), group("tokenizer_config")
        tokens = tokenizer_dict.get("tokens")
        if not tokens or "tokenizer_type" not in tokenizer_dict:
            raise ModelLoadError(
                f"{source} has no tokenizer (tokenizer.ggml.tokens / tokenizer.ggml.model missing)"
            )
        architecture = str(metadata.get("general.architecture") or "")
        try:
            backend, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
        except ValueError as exc:
            raise ModelLoadError(f"cannot build the tokenizer of {source}: {exc}") from exc

        def token_id(key: str) -> int | None:
            value = metadata.get(f"tokenizer.ggml.{key}")
            return int(value) if value is not None and 0 <= int(value) < len(tokens) else None

        # Same defaults as transformers' GGUF path: llama.cpp adds BOS to a sentencepiece vocabulary whose
        # file does not say otherwise; Gemma 4's template writes `<bos>` itself.
        if tokenizer_dict["tokenizer_type"] == "llama":
            config.setdefault("add_bos_token", True)
        elif tokenizer_dict["tokenizer_type"] == "gemma4":
            config["add_bos_token"] = False
        for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
            if (index := token_id(f"{key}_token_id")) is not None:
                config[f"{name}_token"] = tokens[index]
        # A file without a template (a base-model conversion) gets its architecture's published one.
        defaults = GGUF_CHAT_DEFAULTS.get(architecture)
        if defaults is not None and not config.get("chat_template"):
            config["chat_template"] = defaults.chat_template
        hf = PreTrainedTokenizerFast(tokenizer_object=backend, **config)

        # llama.cpp's end-of-turn / end-of-message ids also end generation, beside EOS, as does the
        # architecture's turn-end token (Gemma's <end_of_turn>, which its files do not mark as EOT).
        ends = [token_id(key) for key in ("eos_token_id", "eot_token_id", "eom_token_id")]
        if defaults is not None:
            ends.append(hf.get_vocab().get(defaults.end_of_turn))
        return cls(hf, eos_token_ids=[i for i in ends if i is not None])

    @classmethod
    def _from_hf_dir(cls, directory: Path) -> Tokenizer:
        """Load with `AutoTokenizer` (local files only) and collect EOS ids as vLLM does."""
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for bad checkpoints
            raise ModelLoadError(f"cannot load the tokenizer in {directory}: {exc}") from exc
        eos_ids = set() if hf.eos_token_id is None else {int(hf.eos_token_id)}
        # vLLM stops on the tokenizer's EOS plus the generation config's eos_token_id (an int or a list, e.g.
        # Llama 3's <|eot_id|>); without generation_config.json transformers derives it from config.json.
        source = directory / "generation_config.json"
        if not source.is_file():
            source = directory / "config.json"
        if source.is_file():
            try:
                declared = json.loads(source.read_text(encoding="utf-8")).get("eos_token_id")
            except (OSError, ValueError, AttributeError) as exc:
                raise ModelLoadError(f"cannot read {source}: {exc}") from exc
            eos_ids |= set(_as_id_list(declared, source))
        return cls(hf, eos_token_ids=eos_ids)

    # ------------------------------------------------------------------ text <-> ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; `add_special_tokens` adds what the checkpoint asks for (e.g. BOS), no more."""
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`.

        Never applies `clean_up_tokenization_spaces` (removing spaces before punctuation): that rewrite
        depends on neighbouring tokens, so streamed text could not be made equal to a full decode.
        """
        text = self.hf.decode(
            list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
        )
        return str(text)

    def is_special(self, token_id: int) -> bool:
        """Whether `skip_special_tokens` drops this id when decoding."""
        return token_id in self._special_ids

    def token_to_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for, in context (a leading-space token keeps its space).

        Byte-level BPE spells bytes as printable characters; sentencepiece spells a space as U+2581 and a raw
        byte as `<0xHH>`. Added tokens (e.g. `<|im_end|>`) stand for their text. An id the model has but the
        tokenizer lacks (padded embedding rows) stands for no bytes.
        """
        cached = self._bytes_cache.get(token_id)
        if cached is not None:
            return cached
        result = self._compute_token_bytes(token_id)
        self._bytes_cache[token_id] = result
        return result

    def _compute_token_bytes(self, token_id: int) -> bytes:
        if token_id in self._added_tokens:
            return self._added_tokens[token_id].encode("utf-8")
        token = self._backend.id_to_token(token_id)
        if token is None:
            return b""
        if self._byte_level and all(char in self._byte_of_char for char in token):
            return bytes(self._byte_of_char[char] for char in token)
        if self._byte_fallback and (match := _BYTE_FALLBACK_TOKEN.match(token)):
            return bytes([int(match.group(1), 16)])
        return token.replace(_SENTENCEPIECE_SPACE, " ").encode("utf-8")

    # ------------------------------------------------------------------ chat

    def apply_chat_template(
        self,
        messages: list[dict],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template: str | None = None,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        template_kwargs: dict | None = None,
        add_special_tokens: bool = False,
    ) -> list[int]:
        """Prompt ids for a chat: the template rendered to text (`render_chat`), then encoded.

        `add_special_tokens` is False by default, as in vLLM's chat endpoint: templates that want BOS write
        it themselves, so adding it again would double it.
        """
        text = self.render_chat(
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            chat_template=chat_template,
            tools=tools,
            documents=documents,
            template_kwargs=template_kwargs,
        )
        return self.encode(text, add_special_tokens=add_special_tokens)

    def render_chat(
        self,
        messages: list[dict],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template: str | None = None,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        template_kwargs: dict | None = None,
    ) -> str:
        """The chat rendered to prompt text by the model's template or, if given, `chat_template`.

        `template_kwargs` are extra template variables (vLLM's `chat_template_kwargs`, e.g.
        `enable_thinking`); they may override `add_generation_prompt`, `continue_final_message`, `tools` and
        `documents`, as in vLLM. A `chat_template` other than the name of one of the model's own templates
        renders in the template sandbox. Every failure raises InvalidRequest.
        """
        if chat_template is None and not self.hf.chat_template:
            raise InvalidRequest(
                "this model has no chat template, so chat messages cannot be turned into a prompt; pass "
                "'chat_template' with the request or use the completions API",
                param="chat_template",
            )
        options: dict[str, Any] = {
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": continue_final_message,
            "tools": tools,
            "documents": documents,
        }
        extra = dict(template_kwargs or {})
        if reserved := sorted(_RESERVED_TEMPLATE_KWARGS & extra.keys()):
            raise InvalidRequest(
                f"chat_template_kwargs may not set {', '.join(repr(k) for k in reserved)}",
                param="chat_template_kwargs",
            )
        options.update(extra)
        if options["add_generation_prompt"] and options["continue_final_message"]:
            raise InvalidRequest(
                "continue_final_message and add_generation_prompt cannot both be true: the first continues "
                "the last message, the second starts a new assistant message",
                param="continue_final_message",
            )
        conversation = _template_messages(messages)
        if chat_template is not None and not self._names_own_template(chat_template):
            # What transformers' apply_chat_template passes as template variables: the special tokens,
            # overridden by the call's own options.
            variables = {**self.hf.special_tokens_map, **options}
            return self.template_sandbox.render(chat_template, conversation, variables)
        try:
            text = self.hf.apply_chat_template(
                conversation, chat_template=chat_template, tokenize=False, **options
            )
        except Exception as exc:  # whatever the template raises is about this request, not the server
            raise invalid_request(failure_of(exc)) from exc
        if not isinstance(text, str):
            raise InvalidRequest("the chat template did not render to text", param="chat_template")
        return text

    def _names_own_template(self, chat_template: str) -> bool:
        """Whether `chat_template` is the name of one of the model's templates (e.g. "tool_use"), which
        transformers resolves to that trusted template."""
        own = self.hf.chat_template
        return isinstance(own, Mapping) and chat_template in own


# ---------------------------------------------------------------------- helpers


def _is_gguf(path: Path) -> bool:
    """A GGUF file starts with the magic `GGUF`, whatever its name."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def _as_id_list(declared: Any, source: Path) -> list[int]:
    """`eos_token_id` from a config file: absent, one int, or a list of ints."""
    if declared is None:
        return []
    values = declared if isinstance(declared, list) else [declared]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ModelLoadError(f"eos_token_id in {source} must be an int or a list of ints, got {declared!r}")
    return [int(v) for v in values]


def _default_template(template: Any) -> str | None:
    """A checkpoint's template is a string, or a dict of named ones (`default`, `tool_use`, ...)."""
    if isinstance(template, Mapping):
        template = template.get("default")
    return template if isinstance(template, str) and template else None


def _decoder_types(decoder: Any) -> set[str]:
    """The `type`s in a tokenizers decoder pipeline (nested Sequences flattened)."""
    if decoder is None:
        return set()
    found: set[str] = set()
    pending = [json.loads(decoder.__getstate__())]
    while pending:
        node = pending.pop()
        found.add(str(node.get("type")))
        pending.extend(node.get("decoders") or ())
    return found


def _byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte-level BPE spelling of each byte as one printable character.

    Bytes that are printable Latin-1 characters stand for themselves; the rest (controls, space, soft
    hyphen...) are shifted to code points from U+0100 up, in byte order.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]  # "!".."~", "¡".."¬", "®".."ÿ"
    spelling = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in spelling:
            spelling[byte] = chr(256 + shifted)
            shifted += 1
    return spelling


def _template_messages(messages: Any) -> list[dict]:
    """Copy the request's messages into the shape chat templates expect, as vLLM does.

    Text content parts are joined into one string (the templates of text-only models concatenate
    `message['content']`); tool-call arguments, a JSON string in the OpenAI API, become the object that
    templates pass through `tojson`.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    result = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequest(f"messages[{index}] must be an object", param="messages")
        if "role" not in message:
            raise InvalidRequest(f"messages[{index}] has no 'role'", param="messages")
        copy = dict(message)
        content = copy.get("content")
        if isinstance(content, list):
            copy["content"] = _join_text_parts(content, index)
        if isinstance(copy.get("tool_calls"), list):
            copy["tool_calls"] = [_parsed_tool_call(call, index) for call in copy["tool_calls"]]
        result.append(copy)
    return result


def _join_text_parts(parts: list, index: int) -> str:
    texts = []
    for part in parts:
        if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise InvalidRequest(
                f"messages[{index}].content has a part of type {kind!r}; this model accepts only text parts",
                param="messages",
            )
    return "\n".join(texts)


def _parsed_tool_call(call: Any, index: int) -> Any:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        if not arguments.strip():
            function["arguments"] = {}
        else:
            try:
                function["arguments"] = json.loads(arguments)
            except ValueError as exc:
                raise InvalidRequest(
                    f"messages[{index}].tool_calls has arguments that are not valid JSON: {exc}",
                    param="messages",
                ) from exc
    elif arguments is None:
        function["arguments"] = {}
    return {**call, "function": function}
