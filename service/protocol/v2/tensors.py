"""Open Inference Protocol tensors, from JSON ``data`` or the binary tensor extension.

Binary tensor extension: ``BYTES`` elements are each a 4-byte little-endian length followed
by the bytes; every other datatype is its little-endian elements back to back. A tensor is
converted to numpy in C-level passes; faults raise InvalidInput naming the input (and the
element).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput
from service.runtime.features import MAX_STRING_CHARS

#: v2 datatype -> little-endian numpy dtype (BYTES is handled apart)
DATATYPES: dict[str, str] = {
    "BOOL": "|b1",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def load_header(header: bytes) -> Any:
    """The JSON header; orjson first, the stdlib parser for the NaN tokens Triton writes."""
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None


def tensor_shape(name: str, tensor: Mapping[str, Any]) -> tuple[list[int], int]:
    """A JSON tensor's shape and element count (see :func:`checked_shape`)."""
    return checked_shape(name, tensor.get("shape"))


def checked_shape(name: str, shape: Any) -> tuple[list[int], int]:
    """A declared shape (a list of dimensions, whatever the wire) and its element count:
    at most 2 dimensions, each an integer in [0, 2**63); InvalidInput naming the input else."""
    if isinstance(shape, list) and len(shape) > 2:  # before any per-dimension work
        raise InvalidInput(
            f"input {name!r}: shape must be [n] or [n, 1], got {len(shape)} dimensions"
        )
    ok = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape
    )
    if not ok or not shape:
        raise InvalidInput(
            f"input {name!r}: shape must be a non-empty list of non-negative integers"
        )
    return shape, math.prod(shape)


_U32 = struct.Struct("<I")


def _bytes_elements(name: str, buf: memoryview, count: int) -> np.ndarray:
    """BYTES tensor from its binary form (length-prefixed elements, decoded as UTF-8).

    Each element's offset depends on the previous one's length, so the offsets take one
    tight walk over the elements; the text is then decoded and checked in C-level passes
    (one UTF-8 decode of all elements joined by NUL, split again). Anything unusual (an
    element holding NUL, bad UTF-8, a length out of bounds) goes to :func:`_bytes_checked`,
    which finds and names the element at fault.
    """
    raw = bytes(buf)
    unpack = _U32.unpack_from
    pieces: list[bytes] = [b""] * count
    pos = 0
    try:
        for i in range(count):
            start = pos + 4
            pos = start + unpack(raw, pos)[0]
            pieces[i] = raw[start:pos]
    except struct.error:
        return _bytes_checked(name, raw, count)
    if pos != len(raw) or (count and max(map(len, pieces)) > 4 * MAX_STRING_CHARS):
        return _bytes_checked(name, raw, count)
    try:
        texts = b"\0".join(pieces).decode("utf-8").split("\0") if count else []
    except UnicodeDecodeError:
        return _bytes_checked(name, raw, count)
    if len(texts) != count or (count and max(map(len, texts)) > MAX_STRING_CHARS):
        return _bytes_checked(name, raw, count)
    out = np.empty(count, dtype=object)
    out[:] = texts
    return out


def _bytes_checked(name: str, raw: bytes, count: int) -> np.ndarray:
    """The element-by-element decoder: slower, and names the element at fault."""
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: BYTES data ends inside element {i}")
        (size,) = _U32.unpack_from(raw, pos)
        pos += 4
        if size > 4 * MAX_STRING_CHARS:  # UTF-8 takes at most 4 bytes a character
            raise InvalidInput(f"input {name!r}: element {i} has {size} bytes, over the text limit")
        if pos + size > len(raw):
            raise InvalidInput(f"input {name!r}: BYTES element {i} runs past the data")
        try:
            out[i] = text = raw[pos : pos + size].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r}: element {i} is not UTF-8 text") from None
        if len(text) > MAX_STRING_CHARS:
            raise InvalidInput(
                f"input {name!r}: element {i} has {len(text)} characters, over the limit of "
                f"{MAX_STRING_CHARS}"
            )
        pos += size
    if pos != len(raw):
        raise InvalidInput(f"input {name!r}: {len(raw) - pos} bytes left after {count} elements")
    return out


def from_texts(name: str, items: Sequence[bytes]) -> np.ndarray:
    """A BYTES tensor given element by element (gRPC's ``bytes_contents``): the rules of the
    binary form, UTF-8 text within the length limit, the element at fault named."""
    count = len(items)
    if count == 0:
        return np.empty(0, dtype=object)
    pieces = list(items)
    try:
        if max(map(len, pieces)) <= 4 * MAX_STRING_CHARS and not any(b"\0" in p for p in pieces):
            texts = b"\0".join(pieces).decode("utf-8").split("\0")
            if len(texts) == count and max(map(len, texts)) <= MAX_STRING_CHARS:
                out = np.empty(count, dtype=object)
                out[:] = texts
                return out
    except UnicodeDecodeError:
        pass
    framed = b"".join(_U32.pack(len(p)) + p for p in pieces)
    return _bytes_checked(name, framed, count)


def from_binary(name: str, datatype: str, buf: memoryview, count: int) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(name, buf, count)
    dtype = np.dtype(DATATYPES[datatype])
    if len(buf) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: {len(buf)} bytes of binary data for {count} {datatype} elements"
        )
    return np.frombuffer(buf, dtype=dtype, count=count)


def from_json(name: str, datatype: str, data: Any, count: int) -> np.ndarray:
    """A tensor's JSON ``data``; built as references first, so text is never widened."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: data must be a list")
    try:
        arr = np.array(data, dtype=object)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data is not a regular array of scalars") from None
    arr = arr.reshape(-1)
    if arr.size != count:
        raise InvalidInput(f"input {name!r}: {arr.size} elements, the shape says {count}")
    if count == 0:
        return np.empty(0, dtype=np.float64 if datatype.startswith("FP") else np.int64)
    values = arr.tolist()
    types = set(map(type, values))
    if datatype == "BYTES":
        if types != {str}:
            i = next(i for i, v in enumerate(values) if not isinstance(v, str))
            raise InvalidInput(f"input {name!r}: element {i} is not a string")
        longest = max(map(len, values))
        if longest > MAX_STRING_CHARS:
            i = next(i for i, v in enumerate(values) if len(v) > MAX_STRING_CHARS)
            raise InvalidInput(
                f"input {name!r}: element {i} has {longest} characters, over the limit of "
                f"{MAX_STRING_CHARS}"
            )
        return arr
    if datatype.startswith("FP"):
        if not types <= {int, float, type(None)}:
            raise InvalidInput(f"input {name!r}: {datatype} data must be numbers")
        try:
            return np.array(values, dtype=np.float64)  # null -> NaN
        except OverflowError:
            raise InvalidInput(f"input {name!r}: number out of range") from None
    if datatype == "BOOL":
        if types != {bool}:
            raise InvalidInput(f"input {name!r}: BOOL data must be true/false")
        return np.array(values, dtype=bool)
    if not types <= {int}:
        raise InvalidInput(f"input {name!r}: {datatype} data must be integers")
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        raise InvalidInput(f"input {name!r}: integer out of range") from None
