"""GGUF's container: the header, the key/value metadata and the tensor table, without any tensor data.

Read by both the weights reader (`formats/gguf.py`) and the vocabulary reader (`tokenizer/gguf_vocab.py`), so it
sits below both. The layout (GGUF v2/v3, little-endian) is llama.cpp's `gguf.c` / gguf-py's reader: magic "GGUF",
uint32 version, uint64 tensor count, uint64 key/value count; each key a uint64-length UTF-8 string, a uint32 value
type and the value (arrays: element type, uint64 count, elements); then per tensor its name, uint32 rank, uint64
dimensions (fastest-varying first, i.e. reversed from torch's order), uint32 GGML type and uint64 offset into the
data section, which starts at the next multiple of `general.alignment` (32 by default).

We parse it here rather than with gguf-py's GGUFReader because that reader builds a numpy view per array element:
about 2 s for a 32,000-token vocabulary on the test machine, and ten times that for Llama 3's 128K tokens and 280K
merges; this reader decodes those in well under a second.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 (2023, uint32 counts) predates every file llama.cpp still loads
DEFAULT_ALIGNMENT = 32
# GGUF value types (gguf.GGUFValueType): struct format of each fixed-size one.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
          12: "<f8"}
_STRING, _ARRAY = 8, 9
_MAX_RANK = 4  # ggml tensors have at most four dimensions
# gguf-split's part names: model-00001-of-00003.gguf (the first part holds the metadata).
SPLIT_NAME = re.compile(r"(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table: where its bytes are and how to read them."""

    name: str
    shape: tuple[int, ...]  # torch order (rows first), i.e. GGUF's dimensions reversed
    ggml_type: int  # gguf.GGMLQuantizationType value
    offset: int  # absolute byte offset in the file


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, object]  # scalars as Python values, strings as str, arrays as lists (numbers: numpy)
    tensors: list[TensorInfo]
    file_size: int


class _Cursor:
    """Sequential little-endian reads from a memory map, with errors that say where the file ends."""

    def __init__(self, data: mmap.mmap, path: Path, error: type[Exception]):
        self.data, self.path, self.error, self.pos = data, path, error, 0

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.data):
            raise self.error(f"{self.path.name}: truncated or corrupt GGUF file: needs {n} bytes at byte {start}, "
                             f"the file has {len(self.data)}")
        self.pos += n
        return start

    def scalar(self, fmt: str) -> object:
        size = struct.calcsize("<" + fmt)
        return struct.unpack_from("<" + fmt, self.data, self.take(size))[0]

    def string(self) -> str:
        n = self.scalar("Q")
        start = self.take(n)
        try:
            return self.data[start : start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{self.path.name}: corrupt GGUF file: a string at byte {start} is not UTF-8") from None

    def value(self, kind: int, key: str) -> object:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise self.error(f"{self.path.name}: corrupt GGUF file: key '{key}' has unknown value type {kind}")
        element, count = self.scalar("I"), self.scalar("Q")
        if element in _NUMPY:
            dtype = np.dtype(_NUMPY[element])
            start = self.take(count * dtype.itemsize)
            return np.frombuffer(self.data, dtype=dtype, count=count, offset=start).copy()
        if element == _STRING:
            return [self.string() for _ in range(count)]
        if element == _ARRAY:  # nested arrays: no LLaMA key uses them; read them generically
            return [self.value(_ARRAY, key) for _ in range(count)]
        raise self.error(f"{self.path.name}: corrupt GGUF file: key '{key}' is an array of unknown type {element}")


def is_later_split_part(path: Path) -> bool:
    """Whether `path` is part 2.. of a split GGUF model (listing it would list one model several times)."""
    match = SPLIT_NAME.fullmatch(path.name)
    return bool(match) and int(match.group("no")) > 1


def is_gguf(path: Path) -> bool:
    """Whether a file starts with GGUF's magic."""
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def read_gguf_header(path: str | Path, error: type[Exception]) -> GGUFHeader:
    """Parse the header, metadata and tensor table of a GGUF file, checking that every tensor lies inside it.

    `error` is the exception type raised for a malformed file (the caller's: CheckpointError, TokenizerError).
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = path.stat().st_size
        if size < 24:
            raise error(f"{path.name}: {size} bytes is too short for a GGUF file (24-byte header)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(_Cursor(data, path, error), size)


def _parse(cur: _Cursor, size: int) -> GGUFHeader:
    path, error = cur.path, cur.error
    if cur.data[:4] != GGUF_MAGIC:
        raise error(f"{path.name}: not a GGUF file (starts with {bytes(cur.data[:4])!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.scalar("I")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        why = (f"a big-endian file (version {swapped}); llama.cpp and this reader take little-endian files"
               if swapped in SUPPORTED_VERSIONS else f"version {version}")
        raise error(f"{path.name}: unsupported GGUF file: {why}; supported versions: "
                    f"{', '.join(map(str, SUPPORTED_VERSIONS))}")
    n_tensors, n_keys = cur.scalar("Q"), cur.scalar("Q")
    if n_tensors > size or n_keys > size:  # each entry takes at least one byte: a damaged count
        raise error(f"{path.name}: corrupt GGUF header: {n_tensors} tensors and {n_keys} keys in {size} bytes")
    metadata: dict[str, object] = {}
    for _ in range(n_keys):
        key = cur.string()
        metadata[key] = cur.value(cur.scalar("I"), key)
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        rank = cur.scalar("I")
        if not 1 <= rank <= _MAX_RANK:
            raise error(f"{path.name}: corrupt GGUF tensor table: tensor '{name}' has {rank} dimensions")
        dims = [cur.scalar("Q") for _ in range(rank)]
        infos.append((name, tuple(reversed(dims)), cur.scalar("I"), cur.scalar("Q")))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise error(f"{path.name}: corrupt GGUF header: general.alignment must be a power of two, got {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment
    tensors = [TensorInfo(name, shape, kind, data_start + offset) for name, shape, kind, offset in infos]
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise error(f"{path.name}: corrupt GGUF tensor table: tensor '{duplicate}' appears twice")
    return GGUFHeader(path, version, metadata, tensors, size)
