"""Post-hoc update baselines: from a fully fine-tuned model to an update of a given budget,
without retraining. All take flat models (name -> float32 array) and return package contents.

  topk_delta        the largest |W_new - W_old| entries of the selected tensors (add_sparse)
  svd_delta         a truncated SVD of each selected 2-D delta, rank-1 terms chosen greedily by
                    captured energy per byte over all tensors (add_lowrank)
  compressed_model  the new model itself: selected tensors magnitude-pruned and int8-quantized
                    (replace_sparse), the other tensors fp16 (replace_dense)
  full_model        the new model whole, fp32 (replace_dense): the full-size upper bound
  zstd_patch_size   bytes of a generic binary delta: zstd with the old model file as a
                    raw-content dictionary (like `zstd --patch-from`); lossless
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import zstandard

from neuraldiff import coding as coding_lib
from neuraldiff import package as package_lib
from neuraldiff import updates as updates_lib
from neuraldiff.package import TensorUpdate

Flat = Mapping[str, np.ndarray]


def topk_delta(old: Flat, new: Flat, names: Sequence[str], budget_bytes: int,
               coding: str = "fp16") -> list[TensorUpdate]:
    delta = {n: np.asarray(new[n], np.float32) - np.asarray(old[n], np.float32) for n in names}
    updates, _ = updates_lib.fit_sparse({n: np.abs(d) for n, d in delta.items()}, delta,
                                        budget_bytes, coding, method="topk")
    return updates


def svd_delta(old: Flat, new: Flat, names: Sequence[str], budget_bytes: int,
              coding: str = "fp16") -> list[TensorUpdate]:
    factors = {}
    candidates = []  # (energy per byte, name, rank index)
    width = coding_lib.value_bytes(coding)
    for n in names:
        d = np.asarray(new[n], np.float64) - np.asarray(old[n], np.float64)
        if d.ndim != 2:
            continue
        u, s, vt = np.linalg.svd(d, full_matrices=False)
        factors[n] = (u, s, vt)
        cost = (d.shape[0] + d.shape[1]) * width
        candidates += [(s[i] ** 2 / cost, n, i) for i in range(s.size)]
    candidates.sort(key=lambda c: -c[0])

    def updates(k: int) -> list[TensorUpdate]:
        ranks = {}
        for _, n, _ in candidates[:k]:
            ranks[n] = ranks.get(n, 0) + 1
        out = []
        for n in sorted(ranks):
            u, s, vt = factors[n]
            r = ranks[n]  # greedy by s_i^2 per byte takes each tensor's terms in order
            root = np.sqrt(s[:r])
            out.append(TensorUpdate(n, "add_lowrank", tuple(u.shape[:1] + vt.shape[1:]), coding,
                                    u=(u[:, :r] * root).astype(np.float32),
                                    v=(root[:, None] * vt[:r]).astype(np.float32)))
        return out

    def size_of(k: int) -> int:
        return package_lib.encoded_size("svd", updates(k), budget_bytes=budget_bytes)

    return updates(updates_lib.fit_count(size_of, budget_bytes, len(candidates)))


def compressed_model(new: Flat, names: Sequence[str], budget_bytes: int,
                     coding: str = "int8", rest_coding: str = "fp16") -> list[TensorUpdate]:
    rest = [TensorUpdate(n, "replace_dense", tuple(np.shape(new[n])), rest_coding,
                         values=np.asarray(new[n], np.float32).ravel())
            for n in sorted(set(new) - set(names))]
    weights = {n: np.asarray(new[n], np.float32) for n in names}
    updates, _ = updates_lib.fit_sparse({n: np.abs(w) for n, w in weights.items()}, weights,
                                        budget_bytes, coding, method="compressed",
                                        op="replace_sparse", extra=rest)
    return updates


def full_model(new: Flat) -> list[TensorUpdate]:
    return [TensorUpdate(n, "replace_dense", tuple(np.shape(new[n])), "fp32",
                         values=np.asarray(new[n], np.float32).ravel()) for n in sorted(new)]


def zstd_patch_size(old_file: bytes, new_file: bytes, level: int = 19) -> int:
    """Bytes of `new_file` compressed with `old_file` as a raw-content dictionary, with a
    window covering the whole old file (zstd's --patch-from); checked to round-trip."""
    dictionary = zstandard.ZstdCompressionDict(old_file, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    window_log = max(10, min(31, int(np.ceil(np.log2(max(len(old_file), len(new_file), 1))))))
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log, enable_ldm=True)
    patch = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params).compress(
        new_file)
    restored = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=1 << window_log
                                          ).decompress(patch)
    if restored != new_file:
        raise AssertionError("zstd patch does not round-trip")
    return len(patch)
