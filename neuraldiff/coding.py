"""Byte coding of update contents: positions (delta + varint, or bitmap) and values
(fp32, fp16, or int8 with a per-tensor scale). NumPy only: this runs on the device.

Decoders validate what they read and raise `CodingError` (never index past their input).
"""

from __future__ import annotations

import numpy as np

VALUE_CODINGS = ("fp32", "fp16", "int8")
INDEX_CODINGS = ("delta_varint", "bitmap")
_MAX_VARINT_BYTES = 10  # enough for any uint64


class CodingError(ValueError):
    """Bytes that do not decode to what their manifest promises."""


# -- varint (unsigned LEB128) --------------------------------------------------------------

def varint_encode(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (7 bits per byte, high bit = more bytes follow)."""
    v = np.asarray(values, np.uint64).ravel()
    if v.size == 0:
        return b""
    lengths = np.ones(v.size, np.int64)
    for k in range(1, _MAX_VARINT_BYTES):
        lengths += v >= np.uint64(1 << (7 * k))
    width = int(lengths.max())
    shifts = (7 * np.arange(width)).astype(np.uint64)
    groups = ((v[:, None] >> shifts[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    more = np.arange(width)[None, :] < (lengths[:, None] - 1)
    groups = groups | (more.astype(np.uint8) << 7)
    keep = np.arange(width)[None, :] < lengths[:, None]
    return groups[keep].tobytes()


def varint_decode(data: bytes, count: int) -> np.ndarray:
    """Exactly `count` varints filling all of `data` -> uint64 [count]."""
    b = np.frombuffer(data, np.uint8)
    if count == 0:
        if b.size:
            raise CodingError(f"{b.size} bytes where no varint was expected")
        return np.zeros(0, np.uint64)
    last = (b & 0x80) == 0
    ends = np.flatnonzero(last)
    if ends.size != count or b.size == 0 or not last[-1]:
        truncated = " and a truncated one" if b.size and not last[-1] else ""
        raise CodingError(f"expected {count} varints in {b.size} bytes, found {ends.size} "
                          f"complete ones{truncated}")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _MAX_VARINT_BYTES:
        raise CodingError(f"a varint of {lengths.max()} bytes (at most {_MAX_VARINT_BYTES})")
    position = np.arange(b.size) - np.repeat(starts, lengths)
    parts = (b & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.add.reduceat(parts, starts)


# -- positions ---------------------------------------------------------------------------

def index_size(indices: np.ndarray, size: int) -> tuple[str, int]:
    """(coding, bytes) of the cheaper coding for sorted flat `indices` of a tensor of `size`."""
    bitmap = -(-size // 8)
    delta = len(varint_encode(_gaps(indices)))
    return ("delta_varint", delta) if delta <= bitmap else ("bitmap", bitmap)


def encode_indices(indices: np.ndarray, size: int) -> tuple[str, bytes]:
    """Sorted unique flat indices -> (coding, bytes), whichever coding is smaller."""
    indices = np.asarray(indices, np.int64)
    if indices.size and (indices[0] < 0 or indices[-1] >= size or np.any(np.diff(indices) <= 0)):
        raise ValueError("indices must be sorted, unique and inside the tensor")
    delta = varint_encode(_gaps(indices))
    bitmap_size = -(-size // 8)
    if len(delta) <= bitmap_size:
        return "delta_varint", delta
    mask = np.zeros(size, bool)
    mask[indices] = True
    return "bitmap", np.packbits(mask, bitorder="little").tobytes()


def decode_indices(coding: str, data: bytes, count: int, size: int) -> np.ndarray:
    """Inverse of `encode_indices`: int64 [count], sorted, unique, in [0, size)."""
    if coding == "delta_varint":
        gaps = varint_decode(data, count)
        if count and int(gaps.max()) >= size:
            raise CodingError(f"index gap {int(gaps.max())} exceeds the tensor size {size}")
        indices = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if count and indices[-1] >= size:
            raise CodingError(f"index {indices[-1]} outside a tensor of {size} entries")
        return indices
    if coding == "bitmap":
        if len(data) != -(-size // 8):
            raise CodingError(f"a bitmap of {size} entries takes {-(-size // 8)} bytes, "
                              f"got {len(data)}")
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        if bits[size:].any():
            raise CodingError("bitmap has bits set past the end of the tensor")
        indices = np.flatnonzero(bits[:size])
        if indices.size != count:
            raise CodingError(f"bitmap marks {indices.size} entries, the manifest says {count}")
        return indices.astype(np.int64)
    raise CodingError(f"unknown index coding {coding!r}; known: {INDEX_CODINGS}")


def _gaps(indices: np.ndarray) -> np.ndarray:
    indices = np.asarray(indices, np.int64)
    return np.diff(indices, prepend=-1) - 1


# -- values ------------------------------------------------------------------------------

def value_bytes(coding: str) -> int:
    try:
        return {"fp32": 4, "fp16": 2, "int8": 1}[coding]
    except KeyError:
        raise ValueError(f"unknown value coding {coding!r}; choose from {VALUE_CODINGS}") from None


def encode_values(values: np.ndarray, coding: str, name: str = "values",
                  ) -> tuple[bytes, float | None]:
    """float32 values -> (bytes, scale); `scale` only for int8 (max |v| / 127)."""
    v = np.asarray(values, np.float32).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: non-finite values cannot be packed")
    if coding == "fp32":
        return v.astype("<f4").tobytes(), None
    if coding == "fp16":
        if v.size and np.abs(v).max() > np.finfo(np.float16).max:
            raise ValueError(f"{name}: |value| up to {np.abs(v).max():.3g} overflows fp16; "
                             "use fp32 or int8")
        return v.astype("<f2").tobytes(), None
    if coding == "int8":
        peak = float(np.abs(v).max()) if v.size else 0.0
        scale = float(np.float32(peak / 127.0)) if peak > 0 else 1.0
        q = np.clip(np.rint(v / np.float32(scale)), -127, 127).astype(np.int8)
        return q.tobytes(), scale
    raise ValueError(f"unknown value coding {coding!r}; choose from {VALUE_CODINGS}")


def decode_values(data: bytes, coding: str, count: int, scale: float | None) -> np.ndarray:
    """Inverse of `encode_values` -> float32 [count]."""
    if coding not in VALUE_CODINGS:
        raise CodingError(f"unknown value coding {coding!r}; known: {VALUE_CODINGS}")
    width = value_bytes(coding)
    if len(data) != count * width:
        raise CodingError(f"{count} {coding} values take {count * width} bytes, got {len(data)}")
    if coding == "fp32":
        v = np.frombuffer(data, "<f4").astype(np.float32)
    elif coding == "fp16":
        v = np.frombuffer(data, "<f2").astype(np.float32)
    else:
        if not isinstance(scale, float) or not np.isfinite(scale) or scale <= 0:
            raise CodingError(f"int8 values need a positive finite scale, got {scale!r}")
        v = np.frombuffer(data, np.int8).astype(np.float32) * np.float32(scale)
    if not np.all(np.isfinite(v)):
        raise CodingError("non-finite values")
    return v
