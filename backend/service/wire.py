"""How arrays travel between the backend and its client.

Small arrays ride inside JSON as ``{"dtype", "shape", "data": base64}``; per-unit vectors (one
stimulus's responses, a truth map) are sent as raw little-endian bytes with their dtype and shape
in headers, which is what the viewer's per-click path needs to stay small and fast.
"""

from __future__ import annotations

import base64

import numpy as np

#: dtypes allowed on the wire: decoding never builds object arrays.
_DTYPES = {"float16", "float32", "float64", "int16", "int32", "int64", "uint8", "bool"}
SHAPE_HEADER = "X-Array-Shape"
DTYPE_HEADER = "X-Array-Dtype"


def encode_array(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.name not in _DTYPES:
        raise TypeError(f"dtype {array.dtype} cannot be sent")
    return {"dtype": dtype.name, "shape": list(array.shape), "data": base64.b64encode(array.astype(dtype).tobytes()).decode()}


def decode_array(payload: dict) -> np.ndarray:
    return array_from_bytes(base64.b64decode(payload["data"]), payload["dtype"], payload["shape"])


def array_headers(array: np.ndarray) -> dict[str, str]:
    return {SHAPE_HEADER: ",".join(map(str, array.shape)), DTYPE_HEADER: array.dtype.name}


def array_from_bytes(data: bytes, dtype: str, shape) -> np.ndarray:
    if dtype not in _DTYPES:
        raise ValueError(f"unexpected dtype {dtype!r} on the wire")
    if isinstance(shape, str):
        shape = [int(s) for s in shape.split(",") if s]
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
