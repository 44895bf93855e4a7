"""The model file on a device (safetensors: a JSON header and raw tensors, no pickle), and
applying an update package to it atomically.

A device's model is a flat dict of float32 tensors named by their '/'-joined parameter paths.
The file's header metadata carries the model's fingerprint (`package.fingerprint`, SHA-256 over
names, dtypes, shapes and bytes); `load` recomputes it and refuses a file whose tensors differ
(a flipped bit in the data that safetensors would read without complaint). Files without one
(written by another tool) load unchecked. The metadata also carries the model's version
(`version`, a decimal integer; 0 for a model exported from training, 0 when absent), and
whatever else the writer put there (the recognizer's configuration, `amnet.device`), which an
update carries over unchanged.
`apply_to_file` reads the model, verifies the package (checksum, signature, a version newer
than the model's, base fingerprint), computes the new model, checks its fingerprint, and only
then replaces the file (carrying the package's version): it writes a
temporary file in the same directory, fsyncs it, renames it over the old one and fsyncs the
directory. A failure at any point leaves the old file as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import safetensors
import safetensors.numpy

from neuraldiff import package as package_lib
from neuraldiff import tree


class ModelFileError(ValueError):
    """A model file that cannot be read."""


FINGERPRINT_KEY = "fingerprint"
VERSION_KEY = "version"


class ModelFile(NamedTuple):
    params: dict[str, np.ndarray]  # flat, sorted by name
    version: int
    metadata: dict[str, str]  # the header's other metadata (fingerprint and version left out)


def _metadata(data: bytes) -> dict:
    """The `__metadata__` of safetensors bytes (an 8-byte little-endian header length, then
    the JSON header)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


def to_bytes(params: Mapping, fingerprint: str | None = None, version: int = 0,
             metadata: Mapping[str, str] | None = None) -> bytes:
    """A model (nested or flat) as safetensors bytes, its fingerprint and version in the
    metadata (`fingerprint` when the caller has already computed and checked it) next to
    `metadata` (string values)."""
    if not isinstance(version, int) or not 0 <= version <= package_lib.MAX_MODEL_VERSION:
        raise ValueError(f"a model version is an integer in [0, 2^53], got {version!r}")
    extra = dict(metadata or {})
    if {FINGERPRINT_KEY, VERSION_KEY} & set(extra) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ValueError(f"metadata must map strings to strings, without {FINGERPRINT_KEY!r} "
                         f"or {VERSION_KEY!r}; got keys {sorted(extra)}")
    flat = tree.flatten(params) if any(isinstance(v, Mapping) for v in params.values()) \
        else dict(params)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flat.items()}
    return _sorted_metadata(safetensors.numpy.save(
        arrays, metadata={**extra,
                          FINGERPRINT_KEY: fingerprint or package_lib.fingerprint(arrays),
                          VERSION_KEY: str(version)}))


def _sorted_metadata(data: bytes) -> bytes:
    """safetensors bytes with the header's metadata in key order: safetensors keeps it in a
    hash map, whose order (and so the file's bytes) differs between processes."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def version_of(data: bytes, source: str = "model") -> int:
    """The model version in safetensors bytes' metadata (0 when there is none).

    Raises:
      ModelFileError: the header is unreadable or its version is not a decimal integer.
    """
    try:
        stored = _metadata(data).get(VERSION_KEY, "0")
    except (ValueError, AttributeError) as e:
        raise ModelFileError(f"{source} is not a readable safetensors model: {e}") from None
    if not (isinstance(stored, str) and stored.isascii() and stored.isdigit()
            and int(stored) <= package_lib.MAX_MODEL_VERSION):
        raise ModelFileError(f"{source}: model version {stored!r} in its header is not an "
                             "integer in [0, 2^53]")
    return int(stored)


def from_bytes(data: bytes, source: str = "model") -> dict[str, np.ndarray]:
    """Flat model from safetensors bytes, checked against the fingerprint it carries.

    Raises:
      ModelFileError: not a readable safetensors model, or its tensors differ from its
        fingerprint; the message names `source`.
    """
    try:
        # Sorted: safetensors returns its tensors in no fixed order, and sums over a model
        # must not depend on the process.
        params = dict(sorted(safetensors.numpy.load(data).items()))
        stored = _metadata(data).get(FINGERPRINT_KEY)
    except (safetensors.SafetensorError, ValueError) as e:
        raise ModelFileError(f"{source} is not a readable safetensors model: {e}") from None
    if stored is not None and package_lib.fingerprint(params) != stored:
        raise ModelFileError(f"{source}: its tensors differ from the fingerprint in its header "
                             "(the file changed after it was written)")
    version_of(data, source)
    return params


def save(path: str | Path, params: Mapping, version: int = 0,
         metadata: Mapping[str, str] | None = None) -> str:
    """Writes a model file atomically; returns the model's fingerprint (the one in its
    header)."""
    data = to_bytes(params, version=version, metadata=metadata)
    atomic_write(path, data)
    return _metadata(data)[FINGERPRINT_KEY]


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror}") from None


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Flat model from a file (`tree.unflatten` gives the nested parameters)."""
    return from_bytes(_read(path), str(path))


def read(path: str | Path) -> ModelFile:
    """The model, its version and its other metadata, from a file (checked as `load`)."""
    data = _read(path)
    params = from_bytes(data, str(path))
    metadata = {k: v for k, v in _metadata(data).items()
                if k not in (FINGERPRINT_KEY, VERSION_KEY)}
    return ModelFile(params, version_of(data, str(path)), metadata)


def check_version(package: package_lib.Package, model_version: int, source: str = "model",
                  ) -> None:
    """Rollback protection: raises `RollbackError` unless the package's model version is
    newer than `model_version` (the version of the model at `source`)."""
    if package.version <= model_version:
        raise package_lib.RollbackError(
            f"{source} is at version {model_version}; the package makes version "
            f"{package.version}: refused (a device only moves to newer versions)")


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replaces `path` with `data` or leaves it untouched: temp file, fsync, rename, fsync."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def apply_to_file(model_path: str | Path, package_data: bytes, *, public_key=None,
                  require_signature: bool = False, out_path: str | Path | None = None,
                  ) -> package_lib.Package:
    """Applies a package to the model file (in place, or to `out_path`); returns the verified
    package. Raises `PackageError` / `ModelFileError`, leaving every file unchanged."""
    package = package_lib.decode(package_data, public_key=public_key,
                                 require_signature=require_signature)
    model = read(model_path)
    check_version(package, model.version, str(model_path))
    result = package_lib.apply(package, model.params)  # checks the result's fingerprint
    atomic_write(out_path or model_path,
                 to_bytes(result, package.result_fingerprint, package.version, model.metadata))
    return package


def save_diff(path: str | Path, method: str, variables: Mapping[str, Mapping]) -> None:
    """A learned diff's collections (`{'diff': ..., 'diff_mask' | 'diff_hash': ...}`, nested
    or flat) as one safetensors file, tensors named `<collection>/<leaf path>`."""
    tensors = {}
    for collection, values in variables.items():
        flat = tree.flatten(values) if any(isinstance(v, Mapping) for v in values.values()) \
            else dict(values)
        tensors.update({f"{collection}/{n}": np.ascontiguousarray(np.asarray(v))
                        for n, v in flat.items()})
    atomic_write(path, safetensors.numpy.save(tensors, metadata={"method": method}))


def load_diff(path: str | Path) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """(method, {collection: flat tensors}) of a file written by `save_diff`."""
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            method = (f.metadata() or {}).get("method")
            tensors = {k: f.get_tensor(k) for k in sorted(f.keys())}
    except (OSError, safetensors.SafetensorError) as e:
        raise ModelFileError(f"cannot read diff file {path}: {e}") from None
    if method not in ("sparse", "hashed"):
        raise ModelFileError(f"{path} is not a sparse or hashed diff (method {method!r})")
    collections: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        collection, _, name = key.partition("/")
        collections.setdefault(collection, {})[name] = value
    expected = {"diff", "diff_mask" if method == "sparse" else "diff_hash"}
    if set(collections) != expected:
        raise ModelFileError(f"{path}: collections {sorted(collections)}, a {method} diff has "
                             f"{sorted(expected)}")
    return method, collections
