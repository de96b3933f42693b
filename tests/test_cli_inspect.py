"""`jaxserve inspect` describes a model without loading it; unsupported architectures fail start-up with
the list of supported ones, for Hugging Face directories and GGUF files alike."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from jaxserve import cli
from jaxserve.modeling.default_model import default_model_path
from tests.modeling.tiny_checkpoints import tiny_weights, write_sentencepiece_tokenizer, write_tiny_checkpoint


def test_inspect_json_of_a_tiny_gemma3_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_sentencepiece_tokenizer(write_tiny_checkpoint("gemma3", tmp_path))
    assert cli.main(["inspect", str(directory), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Counted from the checkpoint's own tensors (tied: the LM head is the embedding).
    expected = sum(int(np.prod(w.shape)) for w in tiny_weights("gemma3").values())
    assert report["parameter_count"] == expected
    assert report["dtype"] == "float32" and report["platform"] == "cpu"
    assert report["weight_bytes"] == 4 * expected
    assert report["config"]["architecture"] == "gemma3"
    assert report["config"]["layer_types"] == ["sliding_attention", "full_attention"]
    assert report["config"]["rope_local"]["theta"] == 100.0
    # keys + values, 2 layers, 2 KV heads of width 32, float32
    assert report["kv_bytes_per_token"] == 2 * 2 * 2 * 32 * 4
    assert report["max_model_len"] == 256  # the model's context (below the CPU cap)
    assert report["kv_bytes_max_model_len"] == 256 * report["kv_bytes_per_token"]
    assert "<|assistant|>" in report["chat_template"]


def test_inspect_counts_int8_weight_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_sentencepiece_tokenizer(write_tiny_checkpoint("gemma3", tmp_path))
    assert cli.main(["inspect", str(directory), "--json", "--quantization", "int8"]) == 0
    report = json.loads(capsys.readouterr().out)
    weights = tiny_weights("gemma3")
    # Projections ([out, in] in the checkpoint): int8 kernel + a float32 scale per output; the rest float32;
    # and, the embeddings being tied, an int8 LM head with its scales besides the float embedding.
    expected = sum(
        w.size + 4 * w.shape[0] if name.endswith("_proj.weight") else 4 * w.size
        for name, w in weights.items()
    )
    vocab, width = weights["model.embed_tokens.weight"].shape
    assert report["quantization"] == "int8"
    assert report["weight_bytes"] == expected + vocab * width + 4 * vocab
    assert report["parameter_count"] == sum(int(np.prod(w.shape)) for w in weights.values())


def test_inspect_text_of_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    import gguf

    assert cli.main(["inspect", "--max-model-len", "1024", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    tensors = gguf.GGUFReader(str(default_model_path())).tensors
    count = sum(int(t.n_elements) for t in tensors)
    assert f"parameters: {count:,} " in out
    assert (
        "  architecture: llama\n" in out and "  num_layers: 30\n" in out and "  rope.theta: 100000.0\n" in out
    )
    assert "dtype: bfloat16" in out
    assert "KV cache per token: 22.50 KiB (23,040 bytes)" in out  # 2 * 30 layers * 3 KV heads * 64 * 2 bytes
    assert "KV cache for max_model_len 1024: 22.50 MiB" in out
    assert out.rstrip().endswith("{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_inspect_without_a_chat_template_says_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_sentencepiece_tokenizer(write_tiny_checkpoint("llama3", tmp_path))
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    assert cli.main(["inspect", str(directory)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("chat template: none")


def test_unsupported_hf_architecture_fails_start_up_listing_supported_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = write_tiny_checkpoint("llama3", tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config.update(model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"])
    (directory / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.ERROR):
        assert cli.main(["serve", "--model", str(directory), "--no-warmup"]) == 2
    assert "model_type 'gpt_neox' (GPTNeoXForCausalLM) is not supported" in caplog.text
    assert "(supported: llama, mistral, qwen2, qwen3, gemma3_text)" in caplog.text


def test_unsupported_gguf_architecture_fails_start_up_listing_supported_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import gguf

    path = tmp_path / "phi3.gguf"
    writer = gguf.GGUFWriter(str(path), "phi3")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with caplog.at_level(logging.ERROR):
        assert cli.main(["serve", "--model", str(path), "--no-warmup"]) == 2
        assert cli.main(["inspect", str(path)]) == 2
    assert caplog.text.count("GGUF architecture 'phi3' is not supported") == 2
    assert "(supported: llama, mistral, qwen2, qwen3, gemma3)" in caplog.text
