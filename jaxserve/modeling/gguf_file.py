"""A fast reader of GGUF files: key/value metadata and tensor locations, tensors memory-mapped.

`gguf.GGUFReader` builds a numpy view per metadata item, which takes about a minute for a 262k-entry
vocabulary (Gemma 3's) on a small CPU; this reader walks the same layout with `struct` and `np.frombuffer`
in about a second. Dequantisation stays with the `gguf` package (`gguf.quants.dequantize`).

Layout (little-endian, GGUF v2/v3): magic "GGUF", u32 version, u64 tensor count, u64 key/value count;
each key/value is a string key, a u32 value type and the value; each tensor info is a string name, u32
number of dimensions, u64 dimensions (innermost first), u32 ggml type, u64 offset into the data section,
which starts at the next multiple of `general.alignment` (default 32) after the infos.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxserve.errors import ModelLoadError

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
_STRING, _ARRAY = 8, 9
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
"""GGUF value type -> struct format of one scalar (7 is bool, stored as one byte)."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes are: ggml type, numpy shape (outermost first) and its byte range."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    offset: int
    num_bytes: int


class GGUFFile:
    """Metadata (decoded to Python values, as `GGUFReader` field contents) and memory-mapped tensors."""

    def __init__(self, path: Path) -> None:
        import gguf

        self.path = path
        self._data = np.memmap(path, dtype=np.uint8, mode="r")
        buffer = memoryview(self._data)  # type: ignore[arg-type]
        try:
            if bytes(buffer[:4]) != _MAGIC:
                raise ValueError("no GGUF magic")
            version, tensor_count, kv_count = struct.unpack_from("<IQQ", buffer, 4)
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version} is not supported (2 and 3 are)")
            reader = _Cursor(buffer, 24)
            self.metadata: dict[str, Any] = {}
            for _ in range(kv_count):
                key = reader.string()
                self.metadata[key] = reader.value(reader.u32())
            infos = []
            for _ in range(tensor_count):
                name = reader.string()
                dims = [reader.u64() for _ in range(reader.u32())]
                ggml_type, offset = reader.u32(), reader.u64()
                infos.append((name, dims, ggml_type, offset))
            alignment = int(self.metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
            data_start = -(-reader.position // alignment) * alignment
            self.tensors: dict[str, TensorInfo] = {}
            for name, dims, ggml_type, offset in infos:
                qtype = gguf.GGMLQuantizationType(ggml_type)
                shape = tuple(int(d) for d in reversed(dims))
                block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
                num_bytes = int(np.prod(shape)) // block_size * type_size
                start = data_start + offset
                if start + num_bytes > len(self._data):
                    raise ValueError(f"tensor '{name}' runs past the end of the file")
                self.tensors[name] = TensorInfo(name, ggml_type, shape, start, num_bytes)
        except (ValueError, struct.error, UnicodeDecodeError, KeyError) as exc:
            raise ModelLoadError(f"{path} is not a readable GGUF file: {exc}") from exc

    def type_name(self, name: str) -> str:
        import gguf

        return gguf.GGMLQuantizationType(self.tensors[name].ggml_type).name

    def dequantize(self, name: str) -> np.ndarray:
        """One tensor as float32 in its stored shape (outermost dimension first), via `gguf.quants`."""
        import gguf

        info = self.tensors[name]
        qtype = gguf.GGMLQuantizationType(info.ggml_type)
        raw = self._data[info.offset : info.offset + info.num_bytes]
        data = raw.reshape(gguf.quant_shape_to_byte_shape(info.shape, qtype))
        return np.asarray(gguf.quants.dequantize(data, qtype), dtype=np.float32).reshape(info.shape)


class _Cursor:
    """Sequential little-endian reads from a buffer."""

    def __init__(self, buffer: memoryview, position: int) -> None:
        self.buffer = buffer
        self.position = position

    def u32(self) -> int:
        return int(self._unpack("<I"))

    def u64(self) -> int:
        return int(self._unpack("<Q"))

    def string(self) -> str:
        length = self.u64()
        start = self.position
        self.position += length
        return str(self.buffer[start : self.position], "utf-8")

    def value(self, value_type: int) -> Any:
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type, count = self.u32(), self.u64()
            if item_type == _STRING:
                return [self.string() for _ in range(count)]
            if item_type in _SCALARS:  # one numpy read for the whole array
                dtype = np.dtype(_SCALARS[item_type])
                items = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.position)
                self.position += count * dtype.itemsize
                return items.tolist()
            return [self.value(item_type) for _ in range(count)]  # nested arrays
        if value_type in _SCALARS:
            return self._unpack(_SCALARS[value_type])
        raise ValueError(f"unknown GGUF value type {value_type}")

    def _unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buffer, self.position)
        self.position += struct.calcsize(fmt)
        return value
