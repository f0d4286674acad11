"""A small reader and writer of the safetensors format in numpy, so importing a donor (and
shipping one) needs neither torch nor the safetensors package: 8 bytes (little-endian header
length), a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian tensor
bytes."""
from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np

from igpt.transfer.arms import TransferError

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


class SafetensorsError(TransferError):
    """A file that is not safetensors, or holds a dtype this reader does not know."""


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of the file, as read-only arrays over a memory map (no copy until used)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        try:
            if size > os.fstat(f.fileno()).st_size - 8:
                raise ValueError(f"a header of {size} bytes is longer than the file")
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            raise SafetensorsError(f"{path} is not a safetensors file ({e}).") from e
    data = np.memmap(path, np.uint8, "r", offset=8 + size)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name} has dtype {info['dtype']}; this reader knows "
                                   f"{', '.join(DTYPES)}.")
        start, end = info["data_offsets"]
        tensors[name] = data[start:end].view(DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Writes `tensors` (names sorted, each contiguous little-endian) as one safetensors file."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        if array.dtype not in names:
            raise SafetensorsError(f"tensor {name} has dtype {array.dtype}; safetensors here holds {', '.join(DTYPES)}.")
        data = array.tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the tensor bytes to 8
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for data in chunks:
            f.write(data)
