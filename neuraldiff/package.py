"""Update packages: a versioned binary container for a model update (no pickle).

Layout (all integers little-endian; docs/neuraldiff.md has the full specification):

    offset      size  field
    0           8     magic b"NDIFF\\r\\n\\x1a"
    8           2     format version (uint16), currently 1
    10          4     header length H (uint32)
    14          H     header: UTF-8 JSON object (method, budget, model version, fingerprints,
                      tensor manifest)
    14+H        8     payload length P (uint64)
    22+H        P     payload: each tensor's bytes, in manifest order, back to back
    22+H+P      2     signature length S: 0 (unsigned) or 64
    24+H+P      S     Ed25519 signature of bytes [0, 22+H+P)
    24+H+P+S    32    SHA-256 of bytes [0, 24+H+P+S)
    end of file

Tensor operations (`op` in the manifest), applied to float32 tensors of the base model:
    add_sparse      W[idx] += values                 (idx: delta-varint or bitmap)
    add_hashed      W += ξ ⊙ h[bucket]               (`neuraldiff.hashed`; seed in the manifest)
    add_lowrank     W += U @ V                       (2-D tensors; U [m, r], V [r, n])
    replace_sparse  W = 0; W[idx] = values
    replace_dense   W = values

`decode` validates everything (checksum, signature, manifest, every tensor's bytes) before it
returns; `apply` refuses a model whose fingerprint is not the package's base, and checks that
the result has the fingerprint the server computed. Every failure is a `PackageError`.

The header's `version` (an integer >= 1, signed with the rest) is the version of the model the
package produces; a device refuses a package that is not newer than its model
(`model_file.apply_to_file`), so no package, a full model included, rolls it back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from neuraldiff import coding, hashed, signing

MAGIC = b"NDIFF\r\n\x1a"
VERSION = 2  # 2: the header carries the model version (rollback protection)
MAX_MODEL_VERSION = 2**53  # model versions are JSON integers: exact in every JSON reader
SIGNATURE_BYTES = 64
CHECKSUM_BYTES = 32
OPS = ("add_sparse", "add_hashed", "add_lowrank", "replace_sparse", "replace_dense")
MAX_TENSOR_ENTRIES = 1 << 34
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")


class PackageError(ValueError):
    """An update package that cannot be used (the message says why)."""


class FormatError(PackageError):
    """Not a well-formed package (bad magic, truncated, malformed header or tensor bytes)."""


class UnsupportedVersionError(PackageError):
    """A package format version this reader does not know."""


class ChecksumError(PackageError):
    """The package's bytes differ from what was written (corruption or tampering)."""


class SignatureError(PackageError):
    """Missing, invalid or unverifiable signature."""


class BaseMismatchError(PackageError):
    """The model to update is not the package's base model."""


class ResultMismatchError(PackageError):
    """Applying the package did not give the model the server built."""


class RollbackError(PackageError):
    """The package's model version is not newer than the device model's."""


@dataclasses.dataclass(frozen=True)
class TensorUpdate:
    """One tensor's change, in float32 before coding (see the module docstring for `op`).

    indices: sorted flat indices (add_sparse, replace_sparse); values: the values at those
    indices, the bucket vector h (add_hashed) or all entries (replace_dense); seed: add_hashed;
    u, v: add_lowrank factors. `coding`: fp32, fp16 or int8 for every value array.
    """

    name: str
    op: str
    shape: tuple[int, ...]
    coding: str = "fp16"
    indices: np.ndarray | None = None
    values: np.ndarray | None = None
    seed: int | None = None
    u: np.ndarray | None = None
    v: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class Package:
    """A decoded, verified package: header fields and the tensors' decoded contents."""

    header: dict
    tensors: tuple[TensorUpdate, ...]
    signed: bool
    size: int  # bytes of the encoded package

    @property
    def method(self) -> str:
        return self.header["method"]

    @property
    def base_fingerprint(self) -> str:
        return self.header["base_fingerprint"]

    @property
    def result_fingerprint(self) -> str:
        return self.header["result_fingerprint"]

    @property
    def version(self) -> int:
        """The version of the model this package produces."""
        return self.header["version"]


# -- fingerprints ------------------------------------------------------------------------

def fingerprint(params: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a flat model: for every tensor in name order, its name, dtype, shape
    and little-endian bytes, each length-prefixed. Independent of the file format."""
    digest = hashlib.sha256(b"neuraldiff-model-v1")
    for name in sorted(params):
        array = np.asarray(params[name])
        dtype = array.dtype.newbyteorder("<")
        fields = [name.encode(), dtype.str.encode(), json.dumps(list(array.shape)).encode()]
        for field in fields:
            digest.update(_U64.pack(len(field)) + field)
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        digest.update(_U64.pack(len(data)))
        digest.update(data)
    return digest.hexdigest()


# -- encoding ------------------------------------------------------------------------------

def _encode_tensor(t: TensorUpdate) -> tuple[dict, bytes]:
    if t.op not in OPS:
        raise ValueError(f"{t.name}: unknown op {t.op!r}; choose from {OPS}")
    entry: dict = {"name": t.name, "op": t.op, "shape": list(t.shape), "coding": t.coding}
    if t.op in ("add_sparse", "replace_sparse"):
        indices = np.asarray(t.indices, np.int64)
        values = np.asarray(t.values, np.float32)
        if indices.shape != values.shape or indices.ndim != 1:
            raise ValueError(f"{t.name}: {indices.shape} indices for {values.shape} values")
        index_coding, index_data = coding.encode_indices(indices, t.size)
        value_data, scale = coding.encode_values(values, t.coding, t.name)
        entry.update(count=int(indices.size), index_coding=index_coding,
                     index_bytes=len(index_data), scale=scale)
        return entry, index_data + value_data
    if t.op == "add_hashed":
        if t.seed is None or not 0 <= int(t.seed) < 2**32:
            raise ValueError(f"{t.name}: add_hashed needs a uint32 seed, got {t.seed!r}")
        values = np.asarray(t.values, np.float32)
        if values.ndim != 1 or not 0 < values.size <= t.size:
            raise ValueError(f"{t.name}: {values.size} buckets for {t.size} entries")
        value_data, scale = coding.encode_values(values, t.coding, t.name)
        entry.update(count=int(values.size), seed=int(t.seed), scale=scale)
        return entry, value_data
    if t.op == "add_lowrank":
        u, v = np.asarray(t.u, np.float32), np.asarray(t.v, np.float32)
        if len(t.shape) != 2 or u.shape != (t.shape[0], u.shape[1]) or \
                v.shape != (u.shape[1], t.shape[1]):
            raise ValueError(f"{t.name}: factors {u.shape} @ {v.shape} for a {t.shape} tensor")
        u_data, u_scale = coding.encode_values(u, t.coding, t.name + " (U)")
        v_data, v_scale = coding.encode_values(v, t.coding, t.name + " (V)")
        entry.update(rank=int(u.shape[1]), scale=u_scale, v_scale=v_scale)
        return entry, u_data + v_data
    values = np.asarray(t.values, np.float32)  # replace_dense
    if values.size != t.size:
        raise ValueError(f"{t.name}: {values.size} values for {t.size} entries")
    value_data, scale = coding.encode_values(values, t.coding, t.name)
    entry.update(count=int(values.size), scale=scale)
    return entry, value_data


def _frame(header: dict, payload: bytes, signing_key) -> bytes:
    header_data = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = (_PREFIX.pack(MAGIC, VERSION, len(header_data)) + header_data
            + _U64.pack(len(payload)) + payload)
    signature = signing.sign(signing_key, body) if signing_key is not None else b""
    body += _U16.pack(len(signature)) + signature
    return body + hashlib.sha256(body).digest()


def _header(method: str, entries: list[dict], budget_bytes: int | None, note: str,
            version: int, base: str, result: str) -> dict:
    if not _is_int(version) or not 1 <= version <= MAX_MODEL_VERSION:
        raise ValueError(f"the model version must be an integer in [1, 2^53], got {version!r}")
    return {"format": "neuraldiff-update", "method": method, "budget_bytes": budget_bytes,
            "note": note, "version": version, "base_fingerprint": base,
            "result_fingerprint": result, "tensors": entries}


def encoded_size(method: str, tensors: Sequence[TensorUpdate], *,
                 budget_bytes: int | None = None, note: str = "", signed: bool = False,
                 version: int = 1) -> int:
    """Bytes `pack` would produce for these tensors (for fitting an update to a budget)."""
    entries, payload = _entries_and_payload(tensors)
    header = _header(method, entries, budget_bytes, note, version, "0" * 64, "0" * 64)
    header_bytes = len(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    return (_PREFIX.size + header_bytes + _U64.size + len(payload) + _U16.size
            + (SIGNATURE_BYTES if signed else 0) + CHECKSUM_BYTES)


def framing_overhead(*, note: str = "", signed: bool = False, version: int = 1) -> int:
    """Bytes a note, a signature and a version above 1 add to `encoded_size`'s defaults: fit
    an update to `budget - framing_overhead(...)` when it will carry them."""
    return (len(json.dumps(note)) - 2 + (SIGNATURE_BYTES if signed else 0)
            + len(str(version)) - 1)


def _entries_and_payload(tensors: Sequence[TensorUpdate]) -> tuple[list[dict], bytes]:
    entries, chunks, offset = [], [], 0
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("a tensor appears twice in one update")
    for t in tensors:
        entry, data = _encode_tensor(t)
        entry.update(offset=offset, length=len(data))
        offset += len(data)
        entries.append(entry)
        chunks.append(data)
    return entries, b"".join(chunks)


def pack(method: str, tensors: Sequence[TensorUpdate], base: Mapping[str, np.ndarray], *,
         budget_bytes: int | None = None, note: str = "", signing_key=None, version: int = 1,
         ) -> tuple[bytes, dict[str, np.ndarray]]:
    """Encodes an update against the flat `base` model; `version` is the version of the model
    it produces (a device refuses it unless its own model's version is lower).

    Returns (package bytes, the resulting flat model): the result is computed from the
    *encoded* values, exactly as a device computes it, and its fingerprint is in the header.
    Raises ValueError when the update does not fit the base or `budget_bytes`.
    """
    entries, payload = _entries_and_payload(tensors)
    decoded = [_decode_tensor(e, payload[e["offset"]:e["offset"] + e["length"]])
               for e in entries]
    base_fp = fingerprint(base)
    result = _apply_tensors(decoded, base)
    header = _header(method, entries, budget_bytes, note, version, base_fp, fingerprint(result))
    data = _frame(header, payload, signing_key)
    if budget_bytes is not None and len(data) > budget_bytes:
        raise ValueError(f"update of {len(data)} bytes exceeds its budget of {budget_bytes}")
    return data, result


# -- decoding ------------------------------------------------------------------------------

def decode(data: bytes, *, public_key=None, require_signature: bool = False) -> Package:
    """Parses and verifies a package (checksum; signature when `public_key` is given or
    required). Raises a `PackageError` subclass naming what is wrong."""
    data = bytes(data)
    if len(data) < _PREFIX.size:
        raise FormatError(f"{len(data)} bytes: too short to be an update package")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("not an update package (bad magic bytes)")
    if version != VERSION:
        raise UnsupportedVersionError(f"package format version {version}; this reader "
                                      f"understands version {VERSION}")
    minimum = _PREFIX.size + header_len + _U64.size + _U16.size + CHECKSUM_BYTES
    if len(data) < minimum:
        raise FormatError(f"truncated package: {len(data)} bytes, its header alone needs "
                          f"{minimum}")
    if hashlib.sha256(data[:-CHECKSUM_BYTES]).digest() != data[-CHECKSUM_BYTES:]:
        raise ChecksumError("checksum mismatch: the package is corrupted or truncated")
    position = _PREFIX.size + header_len
    (payload_len,) = _U64.unpack_from(data, position)
    payload_start = position + _U64.size
    signature_at = payload_start + payload_len
    if signature_at + _U16.size + CHECKSUM_BYTES > len(data):
        raise FormatError("payload length runs past the end of the package")
    (signature_len,) = _U16.unpack_from(data, signature_at)
    if signature_len not in (0, SIGNATURE_BYTES):
        raise FormatError(f"signature of {signature_len} bytes (0 or {SIGNATURE_BYTES})")
    end = signature_at + _U16.size + signature_len + CHECKSUM_BYTES
    if end != len(data):
        raise FormatError(f"package is {len(data)} bytes, its fields add up to {end}")
    signature = data[signature_at + _U16.size:signature_at + _U16.size + signature_len]
    if public_key is not None or require_signature:
        if not signature:
            raise SignatureError("the package is not signed and a signature is required")
        if public_key is None:
            raise SignatureError("a signature is required but no public key was given")
        if not signing.verify(public_key, signature, data[:signature_at]):
            raise SignatureError("bad signature: not signed by the given key")
    header = _parse_header(data[_PREFIX.size:_PREFIX.size + header_len], payload_len)
    payload = data[payload_start:signature_at]
    tensors = tuple(_decode_tensor(e, payload[e["offset"]:e["offset"] + e["length"]])
                    for e in header["tensors"])
    return Package(header=header, tensors=tensors, signed=bool(signature), size=len(data))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FormatError(f"malformed header: {message}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_header(raw: bytes, payload_len: int) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"header is not UTF-8 JSON: {e}") from None
    _require(isinstance(header, dict), "not a JSON object")
    _require(header.get("format") == "neuraldiff-update", "format is not neuraldiff-update")
    _require(isinstance(header.get("method"), str), "method missing")
    _require(header.get("budget_bytes") is None or _is_int(header["budget_bytes"]),
             "budget_bytes is not an integer")
    _require(isinstance(header.get("note", ""), str), "note is not a string")
    _require(_is_int(header.get("version")) and 1 <= header["version"] <= MAX_MODEL_VERSION,
             "version is not an integer in [1, 2^53]")
    for key in ("base_fingerprint", "result_fingerprint"):
        fp = header.get(key)
        _require(isinstance(fp, str) and len(fp) == 64
                 and all(c in "0123456789abcdef" for c in fp), f"{key} is not a SHA-256 hex")
    entries = header.get("tensors")
    _require(isinstance(entries, list), "tensors is not a list")
    offset, names = 0, set()
    for i, e in enumerate(entries):
        _require(isinstance(e, dict), f"tensor {i} is not an object")
        name = e.get("name")
        _require(isinstance(name, str) and name and name not in names,
                 f"tensor {i} has no name or a repeated one")
        names.add(name)
        _require(e.get("op") in OPS, f"{name}: unknown op {e.get('op')!r}")
        _require(e.get("coding") in coding.VALUE_CODINGS,
                 f"{name}: unknown value coding {e.get('coding')!r}")
        shape = e.get("shape")
        _require(isinstance(shape, list) and len(shape) <= 8
                 and all(_is_int(d) and d > 0 for d in shape), f"{name}: bad shape {shape!r}")
        _require(int(np.prod(shape, dtype=np.float64)) <= MAX_TENSOR_ENTRIES,
                 f"{name}: tensor too large")
        _require(e.get("offset") == offset and _is_int(e.get("length")) and e["length"] >= 0,
                 f"{name}: tensor bytes not contiguous")
        offset += e["length"]
        _require(offset <= payload_len, f"{name}: bytes run past the payload")
        for key in ("count", "index_bytes", "seed", "rank"):
            _require(key not in e or (_is_int(e[key]) and e[key] >= 0),
                     f"{name}: {key} is not a non-negative integer")
        for key in ("scale", "v_scale"):
            _require(e.get(key) is None or isinstance(e[key], float), f"{name}: bad {key}")
    _require(offset == payload_len, f"tensors cover {offset} of {payload_len} payload bytes")
    return header


def _decode_tensor(e: dict, data: bytes) -> TensorUpdate:
    name, op, shape, value_coding = e["name"], e["op"], tuple(e["shape"]), e["coding"]
    size = int(np.prod(shape, dtype=np.int64))
    width = coding.value_bytes(value_coding)
    try:
        if op in ("add_sparse", "replace_sparse"):
            count, index_bytes = e.get("count"), e.get("index_bytes")
            _require(_is_int(count) and count <= size and _is_int(index_bytes)
                     and index_bytes + count * width == len(data),
                     f"{name}: count/index_bytes do not match its {len(data)} bytes")
            indices = coding.decode_indices(e.get("index_coding"), data[:index_bytes], count,
                                            size)
            values = coding.decode_values(data[index_bytes:], value_coding, count, e.get("scale"))
            return TensorUpdate(name, op, shape, value_coding, indices=indices, values=values)
        if op == "add_hashed":
            count, seed = e.get("count"), e.get("seed")
            _require(_is_int(count) and 0 < count <= size and _is_int(seed) and seed < 2**32,
                     f"{name}: bad bucket count or seed")
            values = coding.decode_values(data, value_coding, count, e.get("scale"))
            return TensorUpdate(name, op, shape, value_coding, values=values, seed=seed)
        if op == "add_lowrank":
            rank = e.get("rank")
            _require(len(shape) == 2 and _is_int(rank) and 0 < rank <= min(shape)
                     and rank * (shape[0] + shape[1]) * width == len(data),
                     f"{name}: rank {rank!r} does not match its shape and bytes")
            split = rank * shape[0] * width
            u = coding.decode_values(data[:split], value_coding, rank * shape[0], e.get("scale"))
            v = coding.decode_values(data[split:], value_coding, rank * shape[1],
                                     e.get("v_scale"))
            return TensorUpdate(name, op, shape, value_coding, u=u.reshape(shape[0], rank),
                                v=v.reshape(rank, shape[1]))
        values = coding.decode_values(data, value_coding, size, e.get("scale"))
        return TensorUpdate(name, op, shape, value_coding, values=values)
    except coding.CodingError as err:
        raise FormatError(f"{name}: {err}") from None


# -- applying ------------------------------------------------------------------------------

def _apply_tensors(tensors: Sequence[TensorUpdate], params: Mapping[str, np.ndarray],
                   ) -> dict[str, np.ndarray]:
    out = dict(params)
    for t in tensors:
        if t.name not in params:
            raise BaseMismatchError(f"the model has no tensor {t.name!r}")
        w = np.asarray(params[t.name])
        if w.shape != t.shape or w.dtype != np.float32:
            raise BaseMismatchError(f"{t.name}: the model's tensor is {w.dtype}{list(w.shape)}, "
                                    f"the update is for float32{list(t.shape)}")
        if t.op == "add_sparse":
            new = w.ravel().copy()
            with np.errstate(over="ignore", invalid="ignore"):
                new[t.indices] += t.values
        elif t.op == "replace_sparse":
            new = np.zeros(w.size, np.float32)
            new[t.indices] = t.values
        elif t.op == "add_hashed":
            with np.errstate(over="ignore", invalid="ignore"):
                new = w.ravel() + hashed.expand(t.values, t.seed, (w.size,))
        elif t.op == "add_lowrank":
            # float64 product rounded once: the same on any BLAS up to rare last-bit ties.
            with np.errstate(over="ignore", invalid="ignore"):
                delta = (t.u.astype(np.float64) @ t.v.astype(np.float64)).astype(np.float32)
            new = (w + delta).ravel()
        else:
            new = t.values.copy()
        if not np.all(np.isfinite(new)):
            raise ResultMismatchError(f"{t.name}: applying the update gives non-finite weights")
        out[t.name] = new.reshape(w.shape).astype(np.float32)
    return out


def apply(package: Package, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The updated flat model (pure: `params` is not modified).

    Raises:
      BaseMismatchError: `params` is not the package's base model.
      ResultMismatchError: the result is not the model the server built.
    """
    found = fingerprint(params)
    if found != package.base_fingerprint:
        raise BaseMismatchError(f"wrong base model: the package updates "
                                f"{package.base_fingerprint[:16]}…, this model is {found[:16]}…")
    result = _apply_tensors(package.tensors, params)
    found = fingerprint(result)
    if found != package.result_fingerprint:
        raise ResultMismatchError(f"applying the package gave model {found[:16]}…, the server "
                                  f"built {package.result_fingerprint[:16]}…")
    return result
