"""jaxserve.modeling.gguf_file reads what `gguf.GGUFReader` reads, only faster."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from jaxserve.errors import ModelLoadError
from jaxserve.modeling.default_model import default_model_path
from jaxserve.modeling.gguf_file import GGUFFile


def _write(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("test.u32", 7)
    writer.add_int64("test.i64", -3)
    writer.add_float32("test.f32", 0.1)
    writer.add_float64("test.f64", 0.1)
    writer.add_bool("test.bool", True)
    writer.add_string("test.text", "héllo 👋")
    writer.add_array("test.strings", ["a", "", "日本"])
    writer.add_array("test.floats", [0.5, -1.25])
    writer.add_tensor("f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("f16", np.linspace(-1, 1, 64, dtype=np.float16).reshape(2, 32))
    q8 = gguf.quants.quantize(
        np.linspace(-2, 2, 128, dtype=np.float32).reshape(2, 64), gguf.GGMLQuantizationType.Q8_0
    )
    writer.add_tensor("q8", q8, raw_shape=q8.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _reader_view(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    metadata = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    tensors = {
        t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32) for t in reader.tensors
    }
    return metadata, tensors


def test_written_file_reads_like_gguf_reader(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.gguf")
    ours = GGUFFile(path)
    metadata, tensors = _reader_view(path)
    assert ours.metadata == metadata
    assert ours.metadata["test.text"] == "héllo 👋" and ours.metadata["test.strings"] == ["a", "", "日本"]
    assert set(ours.tensors) == set(tensors)
    for name, expected in tensors.items():
        np.testing.assert_array_equal(ours.dequantize(name), expected)
    assert ours.type_name("q8") == "Q8_0" and ours.tensors["q8"].shape == (2, 64)


def test_default_model_reads_like_gguf_reader() -> None:
    path = default_model_path()
    ours = GGUFFile(path)
    metadata, _ = _reader_view(path)
    assert ours.metadata == metadata
    reader = gguf.GGUFReader(str(path))
    for tensor in reader.tensors[:12]:  # Q4_1, Q8_0 and F32 tensors
        expected = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
        np.testing.assert_array_equal(ours.dequantize(tensor.name), expected)


def test_truncated_file_is_a_model_load_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        GGUFFile(truncated)
