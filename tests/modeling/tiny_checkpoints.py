"""Tiny random-weight Hugging Face checkpoints, one per decoder family, written without torch.

Each family is a real transformers config (so `config.json` is exactly what transformers itself writes) and a
`model.safetensors` under Hugging Face's own parameter names, filled from a numpy generator seeded per family:
the same family always gives the same bytes, so goldens made from these checkpoints by `tools/make_goldens.py`
stay valid (`weights_digest` pins that).

Weight scales: linear weights and embeddings are N(0, 1/fan_in), not HF's initializer_range of 0.02. At 0.02 a
64-wide model's attention scores are ~0.03, every attention is nearly uniform, and a wrong rotary embedding, q/k
norm or bias would move the logits by less than a golden's tolerance; at 1/sqrt(fan_in) activations stay O(1).
Norm weights are 1 + N(0, 0.1) so that an ignored norm weight shows; biases N(0, 0.1) for the same reason.
(With tied embeddings a random model's greedy continuation repeats one token: the current token's own
embedding dominates its logits. The goldens therefore also record each greedy step's top logits.)

A small sentencepiece-style tokenizer (byte fallback, Llama 2 decoder) is here too, for tests of the
tokenizer and detokenizer on the non byte-level path without downloading one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

SHAPE: Mapping[str, Any] = MappingProxyType(
    {
        "vocab_size": 256,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "dtype": "float32",
    }
)
"""The shape every tiny family shares (2 KV heads for 4 query heads, so grouped-query attention is exercised)."""


@dataclass(frozen=True)
class TinyFamily:
    """One decoder family: its transformers config class, what differs from `SHAPE`, and its weight seed."""

    name: str
    config_class: str
    seed: int
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tied(self) -> bool:
        return bool(self.options.get("tie_word_embeddings", False))

    @property
    def head_dim(self) -> int:
        return int(self.options.get("head_dim", SHAPE["hidden_size"] // SHAPE["num_attention_heads"]))


FAMILY_SPECS: Mapping[str, TinyFamily] = MappingProxyType(
    {
        # Llama 3.1-style rope scaling. original_max_position_embeddings=64 puts the 8 rotary frequencies of a
        # 16-wide head in all three llama3 regimes (kept: wavelength < 16, scaled: > 64, smoothed between).
        "llama3": TinyFamily(
            "llama3",
            "LlamaConfig",
            seed=1001,
            options={
                "tie_word_embeddings": False,
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                },
            },
        ),
        "smollm2": TinyFamily("smollm2", "LlamaConfig", seed=1002, options={"tie_word_embeddings": True}),
        # No sliding window, as in Mistral 7B v0.2+; a window wider than any test sequence would test nothing.
        "mistral": TinyFamily(
            "mistral",
            "MistralConfig",
            seed=1003,
            options={"tie_word_embeddings": False, "sliding_window": None},
        ),
        # Mistral 7B v0.1's sliding window, made narrower than the 12-token golden so that it masks.
        "mistral_swa": TinyFamily(
            "mistral_swa",
            "MistralConfig",
            seed=1006,
            options={"tie_word_embeddings": False, "sliding_window": 4},
        ),
        "qwen2": TinyFamily("qwen2", "Qwen2Config", seed=1004, options={"tie_word_embeddings": True}),
        # head_dim 32 with 4 heads: q_proj is 64 -> 128, so hidden != heads * head_dim.
        "qwen3": TinyFamily(
            "qwen3", "Qwen3Config", seed=1005, options={"tie_word_embeddings": False, "head_dim": 32}
        ),
        # Gemma 3 with everything that differs made to matter on a 12-token golden: a 4-token window on the
        # local (first) layer, a local rotary base far from the global one, linear rope scaling on the global
        # layer, query_pre_attn_scalar != head_dim, and a final logit soft-cap (None in released Gemma 3, but
        # a config may set it) small enough to bend these logits.
        "gemma3": TinyFamily(
            "gemma3",
            "Gemma3TextConfig",
            seed=1006,
            options={
                "tie_word_embeddings": True,
                "head_dim": 32,
                "sliding_window": 4,
                "layer_types": ["sliding_attention", "full_attention"],
                "rope_local_base_freq": 100.0,
                "rope_scaling": {"rope_type": "linear", "factor": 4.0},
                "query_pre_attn_scalar": 24,
                "final_logit_softcapping": 6.0,
                "hidden_activation": "gelu_pytorch_tanh",
            },
        ),
    }
)

FAMILIES: tuple[str, ...] = tuple(FAMILY_SPECS)


def tiny_config(family: str) -> Any:
    """The transformers config object of a family (transformers imports torch here if it is installed)."""
    import transformers

    spec = _spec(family)
    return getattr(transformers, spec.config_class)(**SHAPE, **spec.options)


def tiny_weights(family: str) -> dict[str, np.ndarray]:
    """The family's float32 weights under Hugging Face parameter names, drawn in a fixed order."""
    spec = _spec(family)
    rng = np.random.default_rng(spec.seed)
    vocab, hidden, inter = SHAPE["vocab_size"], SHAPE["hidden_size"], SHAPE["intermediate_size"]
    heads, kv_heads, head_dim = SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"], spec.head_dim

    def linear(out_features: int, in_features: int) -> np.ndarray:  # torch layout: [out, in]
        return rng.normal(0.0, in_features**-0.5, (out_features, in_features)).astype(np.float32)

    gemma = spec.config_class == "Gemma3TextConfig"
    # Gemma's norms scale by (1 + w): its weights are drawn around 0 so the effective scale is ~1 as elsewhere.
    norm_centre = 0.0 if gemma else 1.0

    def norm(size: int) -> np.ndarray:
        return (norm_centre + rng.normal(0.0, 0.1, size)).astype(np.float32)

    def bias(size: int) -> np.ndarray:
        return rng.normal(0.0, 0.1, size).astype(np.float32)

    weights = {"model.embed_tokens.weight": rng.normal(0.0, hidden**-0.5, (vocab, hidden)).astype(np.float32)}
    for layer in range(SHAPE["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        attn = f"{prefix}.self_attn"
        weights[f"{prefix}.input_layernorm.weight"] = norm(hidden)
        weights[f"{attn}.q_proj.weight"] = linear(heads * head_dim, hidden)
        weights[f"{attn}.k_proj.weight"] = linear(kv_heads * head_dim, hidden)
        weights[f"{attn}.v_proj.weight"] = linear(kv_heads * head_dim, hidden)
        weights[f"{attn}.o_proj.weight"] = linear(hidden, heads * head_dim)
        if spec.config_class == "Qwen2Config":  # Qwen2 always has q/k/v biases (and none on o_proj)
            weights[f"{attn}.q_proj.bias"] = bias(heads * head_dim)
            weights[f"{attn}.k_proj.bias"] = bias(kv_heads * head_dim)
            weights[f"{attn}.v_proj.bias"] = bias(kv_heads * head_dim)
        if spec.config_class in ("Qwen3Config", "Gemma3TextConfig"):  # per-head RMSNorm of q and k
            weights[f"{attn}.q_norm.weight"] = norm(head_dim)
            weights[f"{attn}.k_norm.weight"] = norm(head_dim)
        weights[f"{prefix}.post_attention_layernorm.weight"] = norm(hidden)
        if gemma:  # Gemma's sandwich norms: post_attention_layernorm above is on the attention output
            weights[f"{prefix}.pre_feedforward_layernorm.weight"] = norm(hidden)
            weights[f"{prefix}.post_feedforward_layernorm.weight"] = norm(hidden)
        weights[f"{prefix}.mlp.gate_proj.weight"] = linear(inter, hidden)
        weights[f"{prefix}.mlp.up_proj.weight"] = linear(inter, hidden)
        weights[f"{prefix}.mlp.down_proj.weight"] = linear(hidden, inter)
    weights["model.norm.weight"] = norm(hidden)
    if not spec.tied:
        weights["lm_head.weight"] = linear(vocab, hidden)
    return weights


def weights_digest(weights: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, shapes, dtypes and bytes, in name order: what a golden was computed from."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_tiny_checkpoint(family: str, directory: Path) -> Path:
    """Write `config.json` and `model.safetensors` of a tiny family into `directory`; return the directory."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tiny_config(family).save_pretrained(directory)
    save_file(tiny_weights(family), str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def write_sentencepiece_tokenizer(directory: Path) -> Path:
    """Write a small Llama 2-style tokenizer (BPE over U+2581-spaced text, `<0xHH>` byte fallback) with a
    ChatML-like template, in Hugging Face format (tokenizer.json, tokenizer_config.json, ...).

    Its merges are learned from a fixed English corpus, so anything else (accents, CJK, emoji) falls back
    to byte tokens, and its decoder strips the space that starts the text, as Llama 2's does.
    """
    from tokenizers import Tokenizer as BackendTokenizer
    from tokenizers import decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    learner = BackendTokenizer(models.BPE())
    learner.normalizer = normalizer
    learner.train_from_iterator(_CORPUS, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    pieces = specials + [f"<0x{byte:02X}>" for byte in range(256)]
    pieces += [piece for piece, _ in sorted(learned["vocab"].items(), key=lambda item: item[1])]
    merges = [
        tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in learned["merges"]
    ]
    backend = BackendTokenizer(
        models.BPE(
            vocab={piece: index for index, piece in enumerate(pieces)},
            merges=merges,
            unk_token="<unk>",
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    backend.normalizer = normalizer
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
        add_bos_token=True,
        chat_template=_SENTENCEPIECE_TEMPLATE,
    )
    directory = Path(directory)
    hf.save_pretrained(directory)
    return directory


_SENTENCEPIECE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there, and hello again to the whole wide world.",
    "A tokenizer turns text into tokens and tokens back into text.",
    "Streaming text must match the full decode of the same tokens, space for space.",
    "Numbers like 12345 and 2024 are split into digits by some tokenizers.",
)


def _spec(family: str) -> TinyFamily:
    if family not in FAMILY_SPECS:
        raise ValueError(f"unknown tiny family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILY_SPECS[family]
