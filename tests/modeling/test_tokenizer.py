"""jaxserve.modeling.tokenizer: the default model's GGUF tokenizer, HF-directory tokenizers, chat templates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaxserve.errors import InvalidRequest, ModelLoadError
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.tokenizer import Tokenizer
from tests.modeling.tiny_checkpoints import write_sentencepiece_tokenizer

GOLDEN = Path(__file__).resolve().parents[1] / "goldens" / "smollm2_gguf.json"

TEXTS = (
    "Hello, world!",
    "  leading spaces, trailing tab\t and\nnew lines\r\n",
    "Ünïcödé àccents: café, naïve, São Paulo, Ærøskøbing",
    "中文测试：你好，世界！日本語のテキスト、한국어 문장",
    "Emoji 😀🎉👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and skin tones 👍🏽",
    "Ελληνικά, Русский, العربية, हिन्दी, עברית",
    "Numbers 1234567 and 3.14159, code: def f(x): return x**2",
)


def _default_gguf() -> Path:
    return default_model_path()


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return _default_gguf()


@pytest.fixture(scope="module")
def smollm2(gguf_path: Path) -> Iterator[Tokenizer]:
    tokenizer = Tokenizer.from_path(gguf_path)
    yield tokenizer
    tokenizer.close()  # request templates rendered in its sandbox's worker process


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- GGUF tokenizer


def test_gguf_special_token_ids(smollm2: Tokenizer) -> None:
    assert smollm2.hf.convert_tokens_to_ids("<|im_end|>") == 2
    assert smollm2.hf.convert_tokens_to_ids("<|im_start|>") == 1
    assert smollm2.hf.convert_tokens_to_ids("<|endoftext|>") == 0
    assert smollm2.eos_token_ids == frozenset({2})  # <|im_end|>, as in the checkpoint's generation config
    assert smollm2.bos_token_id == 1
    assert smollm2.vocab_size == 49152


def test_gguf_encode_adds_no_bos_because_the_file_says_so(smollm2: Tokenizer) -> None:
    ids = smollm2.encode("Hello world")
    assert ids == smollm2.encode("Hello world", add_special_tokens=False)
    assert ids[0] != smollm2.bos_token_id


def test_special_token_text_encodes_to_one_id(smollm2: Tokenizer) -> None:
    assert smollm2.encode("<|im_start|>user\nhi<|im_end|>") == [1, 4093, 198, 6004, 2]


def test_chat_template_renders_chatml(smollm2: Tokenizer) -> None:
    ids = smollm2.apply_chat_template([{"role": "user", "content": "hi"}])
    assert smollm2.decode(ids, skip_special_tokens=False) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ids.count(smollm2.bos_token_id) == 3  # written by the template only, never added on top


def test_chat_template_without_generation_prompt(smollm2: Tokenizer) -> None:
    ids = smollm2.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        add_generation_prompt=False,
    )
    assert smollm2.decode(ids, skip_special_tokens=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    )


def test_prompt_ids_equal_transformers_goldens(smollm2: Tokenizer, golden: dict) -> None:
    assert len(golden["cases"]) == 8
    for case in golden["cases"]:
        assert smollm2.apply_chat_template(case["messages"]) == case["prompt_ids"], case["name"]


def test_continue_final_message_leaves_the_turn_open(smollm2: Tokenizer) -> None:
    messages = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "The colour is"},
    ]
    ids = smollm2.apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True)
    assert smollm2.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\nThe colour is")


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(smollm2: Tokenizer, text: str) -> None:
    assert smollm2.decode(smollm2.encode(text)) == text


@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_concatenate_to_the_text(smollm2: Tokenizer, text: str) -> None:
    assert b"".join(smollm2.token_to_bytes(i) for i in smollm2.encode(text)) == text.encode("utf-8")


def test_token_to_bytes_of_single_tokens(smollm2: Tokenizer) -> None:
    assert smollm2.token_to_bytes(2) == b"<|im_end|>"
    assert smollm2.token_to_bytes(smollm2.encode(" world")[0]) == b" world"
    emoji = smollm2.encode("😀")
    assert len(emoji) > 1  # split over byte tokens, so single tokens are not valid UTF-8
    with pytest.raises(UnicodeDecodeError):
        smollm2.token_to_bytes(emoji[0]).decode("utf-8")
    assert smollm2.token_to_bytes(10**9) == b""  # an id beyond the tokenizer (padded embedding rows)


def test_decode_skips_special_tokens_by_default(smollm2: Tokenizer) -> None:
    ids = smollm2.encode("<|im_start|>assistant\nHi!<|im_end|>")
    assert smollm2.decode(ids) == "assistant\nHi!"
    assert smollm2.decode(ids, skip_special_tokens=False) == "<|im_start|>assistant\nHi!<|im_end|>"
    assert smollm2.is_special(2) and not smollm2.is_special(ids[1])


# ---------------------------------------------------------------------- chat template options and errors


def test_custom_template_sees_template_kwargs_tools_and_documents(smollm2: Tokenizer) -> None:
    template = (
        "{{ greeting }}|{{ tools | length }}|{{ documents[0]['title'] }}|"
        "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }};{% endfor %}"
    )
    ids = smollm2.apply_chat_template(
        [{"role": "user", "content": "x"}],
        chat_template=template,
        tools=[{"type": "function", "function": {"name": "f"}}],
        documents=[{"title": "doc", "text": "t"}],
        template_kwargs={"greeting": "hey"},
    )
    assert smollm2.decode(ids) == "hey|1|doc|user:x;"


def test_text_content_parts_are_joined(smollm2: Tokenizer) -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    ids = smollm2.apply_chat_template([{"role": "user", "content": parts}])
    assert "<|im_start|>user\nfirst\nsecond<|im_end|>" in smollm2.decode(ids, skip_special_tokens=False)


def test_tool_call_arguments_reach_the_template_as_objects(smollm2: Tokenizer) -> None:
    template = "{% for m in messages %}{% for c in m.tool_calls %}{{ c.function.arguments.city }}{% endfor %}{% endfor %}"
    call = {"id": "1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    messages = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    ids = smollm2.apply_chat_template(messages, chat_template=template, add_generation_prompt=False)
    assert smollm2.decode(ids) == "Oslo"
    assert call["function"]["arguments"] == '{"city": "Oslo"}'  # the caller's messages are not modified
    call["function"]["arguments"] = "{not json"
    with pytest.raises(InvalidRequest) as info:
        smollm2.apply_chat_template(messages, chat_template=template, add_generation_prompt=False)
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"chat_template": "{% for m in messages %}{{ m['content'] }"}, "chat_template"),
        ({"chat_template": "{{ raise_exception('roles must alternate') }}"}, "messages"),
        ({"template_kwargs": {"tokenize": True}}, "chat_template_kwargs"),
        ({"continue_final_message": True}, "continue_final_message"),
    ],
)
def test_template_problems_raise_invalid_request(smollm2: Tokenizer, kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        smollm2.apply_chat_template([{"role": "user", "content": "hi"}], **kwargs)
    assert info.value.param == param
    assert info.value.status == 400


def test_raise_exception_message_is_kept(smollm2: Tokenizer) -> None:
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        smollm2.apply_chat_template(
            [{"role": "user", "content": "hi"}], chat_template="{{ raise_exception('roles must alternate') }}"
        )


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hi",
        [{"content": "no role"}],
        ["not an object"],
        [{"role": "user"}],  # the SmolLM2 template concatenates a missing content
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    ],
)
def test_bad_messages_raise_invalid_request(smollm2: Tokenizer, messages: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        smollm2.apply_chat_template(messages)  # type: ignore[arg-type]
    assert info.value.param == "messages"


def test_missing_chat_template_raises_invalid_request(smollm2: Tokenizer) -> None:
    from transformers import PreTrainedTokenizerFast

    bare = Tokenizer(
        PreTrainedTokenizerFast(tokenizer_object=smollm2.hf.backend_tokenizer),
        eos_token_ids=[2],
        template_sandbox=smollm2.template_sandbox,  # closed with smollm2's
    )
    assert bare.chat_template is None
    with pytest.raises(InvalidRequest, match="no chat template") as info:
        bare.apply_chat_template([{"role": "user", "content": "hi"}])
    assert info.value.param == "chat_template"
    ids = bare.apply_chat_template(
        [{"role": "user", "content": "hi"}], chat_template="{{ messages[0].content }}"
    )
    assert bare.decode(ids) == "hi"


# ---------------------------------------------------------------------- Hugging Face directories


def test_hf_directory_saved_from_gguf_tokenizer_gives_identical_ids(
    smollm2: Tokenizer, golden: dict, tmp_path: Path
) -> None:
    smollm2.hf.save_pretrained(tmp_path)
    loaded = Tokenizer.from_path(tmp_path)
    assert loaded.chat_template == smollm2.chat_template
    assert loaded.eos_token_ids == smollm2.eos_token_ids
    assert loaded.bos_token_id == smollm2.bos_token_id
    assert loaded.vocab_size == smollm2.vocab_size
    for text in TEXTS:
        assert loaded.encode(text) == smollm2.encode(text)
    for case in golden["cases"]:
        assert loaded.apply_chat_template(case["messages"]) == case["prompt_ids"], case["name"]

    # The generation config's eos_token_id list adds to the tokenizer's EOS, as in vLLM.
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    assert Tokenizer.from_path(tmp_path).eos_token_ids == frozenset({0, 2})


def test_sentencepiece_directory_honours_add_bos_and_byte_fallback(tmp_path: Path) -> None:
    tokenizer = Tokenizer.from_path(write_sentencepiece_tokenizer(tmp_path))
    assert tokenizer.bos_token_id == 1
    assert tokenizer.eos_token_ids == frozenset({2})
    text = "Hello wörld 😀 你好"
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.encode(text, add_special_tokens=False) == ids[1:]
    assert tokenizer.decode(ids) == text
    # `<0xHH>` tokens are raw bytes; U+2581 is a space (kept here: bytes are the token's, in context).
    assert b"".join(tokenizer.token_to_bytes(i) for i in ids[1:]) == b" " + text.encode("utf-8")
    # The template writes BOS itself, so the chat prompt holds exactly one.
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}])
    assert chat.count(tokenizer.bos_token_id) == 1


def test_directory_with_one_gguf_file_loads_it(
    gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[Path] = []
    monkeypatch.setattr(Tokenizer, "_from_gguf", classmethod(lambda cls, path: loaded.append(path)))
    (tmp_path / gguf_path.name).symlink_to(gguf_path)
    Tokenizer.from_path(tmp_path)
    assert loaded == [tmp_path / gguf_path.name]
    (tmp_path / "second.gguf").symlink_to(gguf_path)
    with pytest.raises(ModelLoadError, match="2 .gguf files"):
        Tokenizer.from_path(tmp_path)


def test_no_tokenizer_raises_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Tokenizer.from_path(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelLoadError, match="no tokenizer found"):
        Tokenizer.from_path(tmp_path)
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        Tokenizer.from_path(not_gguf)


def test_gguf_without_tokenizer_metadata_raises_model_load_error() -> None:
    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        Tokenizer.from_gguf_metadata({"general.architecture": "llama"}, source="test.gguf")


QWEN3_STYLE_TEMPLATE = (
    "{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{%- endif %}"
    "{%- endif %}"
)
"""The Qwen3 convention, written for this test: `enable_thinking=false` in the template variables
pre-fills an empty thinking block, so the model answers without reasoning."""


@pytest.mark.parametrize("kwargs", [None, {"enable_thinking": True}, {"enable_thinking": False}])
def test_enable_thinking_reaches_the_model_template_as_in_transformers(
    tmp_path: Path, kwargs: dict | None
) -> None:
    from transformers import AutoTokenizer

    directory = write_sentencepiece_tokenizer(tmp_path)
    (directory / "chat_template.jinja").write_text(QWEN3_STYLE_TEMPLATE)  # the model's own template
    ours = Tokenizer.from_path(directory)
    theirs = AutoTokenizer.from_pretrained(directory)
    messages = [{"role": "user", "content": "Is 17 prime?"}]

    ids = ours.apply_chat_template(messages, template_kwargs=kwargs)
    text = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **(kwargs or {}))
    assert ids == theirs.encode(text, add_special_tokens=False)
    assert ("<think>" in ours.decode(ids, skip_special_tokens=False)) == (
        kwargs == {"enable_thinking": False}
    )
