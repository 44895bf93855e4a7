"""Neural diff: diff collections and merge, pruning, hashing, coding, packages (format,
budget, reliability and security), post-hoc baselines and the CLI."""

import hashlib
import json
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from neuraldiff import coding, hashed, model_file, package, posthoc, signing, sparse, tree, updates
from neuraldiff.package import TensorUpdate
from tests.helpers import HANG_GUARD_S, ROOT, cpu_env


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return {"encoder": {"layers_0": {"input_kernel": rng.normal(size=(24, 64)).astype(np.float32),
                                     "bias": rng.normal(size=(64,)).astype(np.float32)}},
            "output_kernel": rng.normal(size=(16, 10)).astype(np.float32),
            "embed": {"embedding": rng.normal(size=(10, 8)).astype(np.float32)}}


def _flat(seed=0):
    return tree.flatten(_model(seed))


def _moved(flat, seed, scale=0.05):
    rng = np.random.default_rng(seed)
    return {n: (v + scale * rng.normal(size=v.shape)).astype(np.float32) for n, v in flat.items()}


# -- collections, merge, pruning, hashing ------------------------------------------------

def test_flatten_round_trips_and_default_selector_takes_matrices_only():
    params = _model()
    assert tree.unflatten(tree.flatten(params)).keys() == params.keys()
    assert tree.Selector().names(params) == ["embed/embedding", "encoder/layers_0/input_kernel",
                                             "output_kernel"]
    assert "encoder/layers_0/bias" in tree.Selector(min_ndim=1).names(params)
    assert tree.Selector(exclude="embed").names(params) == ["encoder/layers_0/input_kernel",
                                                            "output_kernel"]
    with pytest.raises(ValueError, match="selects no parameter"):
        tree.Selector(include="nothing").names(params)


def test_sparse_merge_trains_only_the_diff_inside_the_mask():
    params = jax.tree.map(jnp.asarray, _model())
    variables = sparse.init(params)
    assert set(variables) == {"diff", "diff_mask"}
    rng = np.random.default_rng(1)
    diff = jax.tree.map(lambda d: jnp.asarray(rng.normal(size=d.shape), jnp.float32),
                        variables["diff"])
    mask = jax.tree.map(lambda m: jnp.asarray(rng.random(m.shape) < 0.3), variables["diff_mask"])
    merged = sparse.merge(params, diff, mask)
    k = "output_kernel"
    np.testing.assert_array_equal(merged[k], params[k] + np.where(mask[k], diff[k], 0))
    np.testing.assert_array_equal(merged["encoder"]["layers_0"]["bias"],
                                  params["encoder"]["layers_0"]["bias"])  # not selected

    def loss(d):
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(sparse.merge(params, d, mask)))

    grads = jax.grad(loss)(diff)
    for name, g in tree.flatten(grads).items():
        m = tree.flatten(mask)[name]
        w = tree.flatten(merged)[name]
        np.testing.assert_allclose(g, np.where(m, np.cos(w), 0), rtol=1e-6)


def test_prune_keeps_the_largest_entries_still_in_the_mask():
    d = {"a": np.array([[0.5, -3.0], [0.1, 2.0]], np.float32), "b": np.array([-1.0, 4.0, 0.2],
                                                                               np.float32)}
    m = {"a": np.array([[True, True], [True, True]]), "b": np.array([True, False, True])}
    new_d, new_m = sparse.prune(d, m, keep=3)
    # 4.0 is outside the mask already: it never comes back.
    assert new_m["a"].tolist() == [[False, True], [False, True]]
    assert new_m["b"].tolist() == [True, False, False]
    assert new_d["b"].tolist() == [-1.0, 0.0, 0.0] and sparse.count(new_m) == (3, 7)
    with pytest.raises(ValueError, match="only 6 remain"):
        sparse.prune(d, m, keep=7)


def test_density_schedule_is_cubic_from_begin_to_end():
    schedule = sparse.density_schedule(0.1, begin_step=10, end_step=30)
    assert float(schedule(0)) == 1.0 and float(schedule(10)) == 1.0
    assert abs(float(schedule(20)) - (0.1 + 0.9 * 0.5 ** 3)) < 1e-6
    assert abs(float(schedule(30)) - 0.1) < 1e-6 and abs(float(schedule(99)) - 0.1) < 1e-6
    values = [float(schedule(t)) for t in range(40)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_hash_is_identical_in_numpy_and_jax_and_spreads_over_buckets():
    b_np, s_np = hashed.buckets_and_signs(50_000, 1234, 997, np)
    b_jx, s_jx = hashed.buckets_and_signs(50_000, 1234, 997, jnp)
    np.testing.assert_array_equal(b_np, np.asarray(b_jx))
    np.testing.assert_array_equal(s_np, np.asarray(s_jx))
    counts = np.bincount(b_np, minlength=997)
    assert counts.min() > 20 and counts.max() < 90  # ~50 per bucket
    assert abs(float(s_np.mean())) < 0.02
    other, _ = hashed.buckets_and_signs(50_000, 1235, 997, np)
    assert np.mean(other == b_np) < 0.01  # another seed, another map


def test_hashed_merge_gradient_sums_signed_gradients_per_bucket():
    params = jax.tree.map(jnp.asarray, _model())
    names = tree.Selector().names(params)
    buckets = {n: 7 for n in names}
    variables = hashed.init(params, buckets, seed=3)
    h = jax.tree.map(lambda x: x + 0.5, variables["diff"])
    seeds = variables["diff_hash"]

    def loss(h):
        return sum(jnp.sum(x ** 2) for x in jax.tree.leaves(hashed.merge(params, h, seeds)))

    grads = tree.flatten(jax.grad(loss)(h))
    merged = tree.flatten(hashed.merge(params, h, seeds))
    for name in names:
        bucket, sign = hashed.buckets_and_signs(merged[name].size, int(tree.flatten(seeds)[name]),
                                                7)
        expected = np.zeros(7)
        np.add.at(expected, bucket, sign * 2 * np.asarray(merged[name]).ravel())
        np.testing.assert_allclose(grads[name], expected, rtol=1e-4)


def test_bucket_allocation_is_proportional_and_exact():
    out = hashed.allocate_buckets({"a": 1000, "b": 100, "c": 3}, 111)
    assert sum(out.values()) == 111 and out["a"] > out["b"] > 0 and out["c"] >= 1
    with pytest.raises(ValueError, match="cannot cover"):
        hashed.allocate_buckets({"a": 10, "b": 10}, 1)


# -- coding ------------------------------------------------------------------------------

@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_varint_round_trips(values):
    data = coding.varint_encode(np.array(values, np.uint64))
    np.testing.assert_array_equal(coding.varint_decode(data, len(values)),
                                  np.array(values, np.uint64))


@given(st.sets(st.integers(0, 4999), max_size=600))
def test_indices_round_trip_with_the_smaller_coding(chosen):
    indices = np.array(sorted(chosen), np.int64)
    kind, data = coding.encode_indices(indices, 5000)
    assert len(data) == min(len(coding.varint_encode(np.diff(indices, prepend=-1) - 1)), 625)
    np.testing.assert_array_equal(coding.decode_indices(kind, data, len(indices), 5000), indices)


def test_value_codings_round_trip_within_their_precision():
    v = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    for kind, tolerance in (("fp32", 0), ("fp16", 2e-3), ("int8", None)):
        data, scale = coding.encode_values(v, kind)
        back = coding.decode_values(data, kind, v.size, scale)
        bound = tolerance if tolerance is not None else scale / 2 + 1e-7
        assert np.abs(back - v).max() <= bound * (np.abs(v).max() if kind == "fp16" else 1)
    with pytest.raises(ValueError, match="non-finite"):
        coding.encode_values(np.array([np.nan], np.float32), "fp16", "w")
    with pytest.raises(ValueError, match="overflows fp16"):
        coding.encode_values(np.array([1e6], np.float32), "fp16", "w")


# -- packages ----------------------------------------------------------------------------

def _all_ops(base):
    rng = np.random.default_rng(5)
    k = base["encoder/layers_0/input_kernel"]
    return [
        TensorUpdate("encoder/layers_0/input_kernel", "add_sparse", k.shape, "fp16",
                     indices=np.array([0, 7, 100, 1535]), values=np.array([1, -2, 3, 0.5])),
        TensorUpdate("output_kernel", "add_lowrank", (16, 10), "fp32",
                     u=rng.normal(size=(16, 2)), v=rng.normal(size=(2, 10))),
        TensorUpdate("embed/embedding", "add_hashed", (10, 8), "int8",
                     values=rng.normal(size=5), seed=99),
        TensorUpdate("encoder/layers_0/bias", "replace_dense", (64,), "fp32",
                     values=np.arange(64, dtype=np.float32)),
    ]


def test_pack_decode_apply_gives_each_op_its_arithmetic():
    base = _flat()
    data, result = package.pack("mixed", _all_ops(base), base, note="g1")
    pkg = package.decode(data)
    assert pkg.method == "mixed" and pkg.header["note"] == "g1" and not pkg.signed
    applied = package.apply(pkg, base)
    assert package.fingerprint(applied) == package.fingerprint(result) == pkg.result_fingerprint
    k = "encoder/layers_0/input_kernel"
    expected = base[k].ravel().copy()
    expected[[0, 7, 100, 1535]] += [1, -2, 3, 0.5]
    np.testing.assert_array_equal(applied[k].ravel(), expected)
    t = pkg.tensors[1]
    np.testing.assert_allclose(applied["output_kernel"], base["output_kernel"] + t.u @ t.v,
                               atol=1e-6)
    h = pkg.tensors[2]
    np.testing.assert_allclose(applied["embed/embedding"],
                               base["embed/embedding"] + hashed.expand(h.values, 99, (10, 8)))
    np.testing.assert_array_equal(applied["encoder/layers_0/bias"], np.arange(64))
    assert package.encoded_size("mixed", _all_ops(base), note="g1") == len(data)


def test_fitting_a_sparse_update_uses_the_whole_budget_and_no_more():
    old = _flat()
    new = _moved(old, 1)
    names = tree.Selector().names(tree.unflatten(old))
    delta = {n: new[n] - old[n] for n in names}
    scores = {n: np.abs(d) for n, d in delta.items()}
    for budget in (600, 1500, 4000):
        contents = posthoc.topk_delta(old, new, names, budget)
        data, _ = package.pack("topk", contents, old, budget_bytes=budget)
        kept = sum(t.indices.size for t in contents)
        assert len(data) <= budget and kept > 0
        # The next-largest entry would not fit.
        one_more = updates.sparse_updates(delta, sparse.top_k_masks(scores, kept + 1), "fp16")
        assert package.encoded_size("topk", one_more, budget_bytes=budget) > budget
    with pytest.raises(ValueError, match="does not hold even an empty update"):
        posthoc.topk_delta(old, new, names, 100)


def test_wrong_base_is_refused_and_the_device_file_is_unchanged(tmp_path):
    base, other = _flat(0), _flat(1)
    data, _ = package.pack("topk", _all_ops(base)[:1], base)
    device = tmp_path / "model.safetensors"
    model_file.save(device, other)
    before = device.read_bytes()
    with pytest.raises(package.BaseMismatchError, match="wrong base model"):
        model_file.apply_to_file(device, data)
    assert device.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_a_package_not_newer_than_the_model_is_refused_and_the_file_kept(tmp_path):
    """Rollback protection: versions are signed in the header, and the device's model file
    moves only forward; a full-model package cannot take it back either."""
    base, new = _flat(0), _moved(_flat(0), 1)
    device = tmp_path / "model.safetensors"
    model_file.save(device, base, metadata={"recognizer": "{}"})  # from training: version 0
    first, _ = package.pack("topk", _all_ops(base)[:1], base, version=1)
    model_file.apply_to_file(device, first)
    updated, version, _ = model_file.read(device)
    assert version == 1 and package.decode(first).version == 1
    assert model_file.read(device).metadata == {"recognizer": "{}"}  # carried over
    before = device.read_bytes()
    # Replaying the same package, and a full model of version 1 built for the updated model.
    replay_full, _ = package.pack("full", posthoc.full_model(base), updated, version=1)
    for data, found in ((first, "version 1"), (replay_full, "version 1")):
        with pytest.raises(package.RollbackError, match=f"at {found}; the package makes "
                                                        "version 1: refused"):
            model_file.apply_to_file(device, data)
        assert device.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    # A device at version 5 refuses an older full model even though it would apply cleanly.
    model_file.save(device, new, version=5)
    before = device.read_bytes()
    old, _ = package.pack("full", posthoc.full_model(base), new, version=4)
    with pytest.raises(package.RollbackError, match="at version 5; the package makes version 4"):
        model_file.apply_to_file(device, old)
    assert device.read_bytes() == before
    newer, _ = package.pack("full", posthoc.full_model(base), new, version=6)
    model_file.apply_to_file(device, newer)
    restored, version, _ = model_file.read(device)
    assert version == 6 and package.fingerprint(restored) == package.fingerprint(base)
    # The version is signed with the header: changing it breaks the signature.
    signing.generate(tmp_path / "k.pem", tmp_path / "k.pub")
    signed, _ = package.pack("full", posthoc.full_model(base), new, version=6,
                             signing_key=signing.load_private_key(tmp_path / "k.pem"))
    forged = _with_checksum(signed.replace(b'"version":6', b'"version":9')[:-32] + bytes(32))
    with pytest.raises(package.SignatureError, match="bad signature"):
        package.decode(forged, public_key=signing.load_public_key(tmp_path / "k.pub"))
    for bad in (0, -1, 1.5, 2**60):
        with pytest.raises(ValueError, match="model version must be an integer"):
            package.pack("full", posthoc.full_model(base), new, version=bad)
    # A model file whose version is not an integer is refused at load.
    device.write_bytes(safetensors.numpy.save(base, metadata={"version": "v2"}))
    with pytest.raises(model_file.ModelFileError, match="model version 'v2'"):
        model_file.load(device)


def test_a_model_file_whose_tensors_changed_is_refused_at_load(tmp_path):
    base = _flat(0)
    device = tmp_path / "model.safetensors"
    assert model_file.save(device, base) == package.fingerprint(model_file.load(device))
    data = bytearray(device.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor: safetensors alone reads it without complaint
    device.write_bytes(bytes(data))
    with pytest.raises(model_file.ModelFileError,
                       match=f"{device}: its tensors differ from the fingerprint"):
        model_file.load(device)
    package_data, _ = package.pack("topk", _all_ops(base)[:1], base)
    with pytest.raises(model_file.ModelFileError, match="differ from the fingerprint"):
        model_file.apply_to_file(device, package_data)
    assert device.read_bytes() == bytes(data)
    # A safetensors file written by another tool (no fingerprint) loads unchecked.
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(safetensors.numpy.save(base))
    assert package.fingerprint(model_file.load(plain)) == package.fingerprint(base)


def test_every_flipped_byte_and_every_truncation_is_detected():
    base = _flat()
    data, _ = package.pack("mixed", _all_ops(base), base)
    for position in range(len(data)):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x01 << (position % 8)
        with pytest.raises(package.PackageError):
            package.decode(bytes(corrupted))
    for length in range(len(data)):
        with pytest.raises(package.PackageError):
            package.decode(data[:length])
    with pytest.raises(package.PackageError):
        package.decode(data + b"\0")


def test_signatures_are_checked_when_a_key_is_given_or_required(tmp_path):
    base = _flat()
    signing.generate(tmp_path / "server.pem", tmp_path / "device.pub")
    signing.generate(tmp_path / "other.pem", tmp_path / "other.pub")
    key = signing.load_private_key(tmp_path / "server.pem")
    public = signing.load_public_key(tmp_path / "device.pub")
    signed, _ = package.pack("topk", _all_ops(base)[:1], base, signing_key=key)
    unsigned, _ = package.pack("topk", _all_ops(base)[:1], base)
    assert package.decode(signed, public_key=public, require_signature=True).signed
    with pytest.raises(package.SignatureError, match="not signed"):
        package.decode(unsigned, public_key=public)
    with pytest.raises(package.SignatureError, match="not signed"):
        package.decode(unsigned, require_signature=True)
    with pytest.raises(package.SignatureError, match="bad signature"):
        package.decode(signed, public_key=signing.load_public_key(tmp_path / "other.pub"))
    with pytest.raises(package.SignatureError, match="no public key"):
        package.decode(signed, require_signature=True)
    # A signature made for other bytes, transplanted with a fixed checksum, is refused.
    other, _ = package.pack("topk", _all_ops(base)[:1], base, note="x", signing_key=key)
    forged = _with_checksum(signed[:-96] + other[-96:-32] + bytes(32))
    with pytest.raises(package.SignatureError, match="bad signature"):
        package.decode(forged, public_key=public)
    with pytest.raises(signing.KeyFileError, match="not a PEM key"):
        (tmp_path / "junk.pub").write_text("junk")
        signing.load_public_key(tmp_path / "junk.pub")


def _with_checksum(body_and_old_checksum: bytes) -> bytes:
    body = body_and_old_checksum[:-32]
    return body + hashlib.sha256(body).digest()


def test_unknown_format_version_gives_a_clear_error():
    base = _flat()
    data = bytearray(package.pack("topk", _all_ops(base)[:1], base)[0])
    struct.pack_into("<H", data, 8, 7)
    with pytest.raises(package.UnsupportedVersionError, match="version 7; this reader "
                                                              "understands version 2"):
        package.decode(_with_checksum(bytes(data)))


def test_a_chain_of_five_device_applies_reproduces_the_server_bit_exactly(tmp_path):
    server = _flat()
    device = tmp_path / "model.safetensors"
    model_file.save(device, server)
    names = tree.Selector().names(tree.unflatten(server))
    for generation in range(1, 6):
        target = _moved(server, generation)
        method = ("topk", "svd", "compressed", "hashed", "full")[generation - 1]
        if method == "topk":
            contents = posthoc.topk_delta(server, target, names, 3000)
        elif method == "svd":
            contents = posthoc.svd_delta(server, target, names, 3000)
        elif method == "compressed":
            contents = posthoc.compressed_model(target, names, 5000)
        elif method == "hashed":
            h = {n: np.random.default_rng(7).normal(size=50).astype(np.float32) for n in names}
            contents = updates.hashed_updates(h, {n: 1000 + i for i, n in enumerate(names)},
                                              {n: server[n].shape for n in names}, "int8")
        else:
            contents = posthoc.full_model(target)
        data, server = package.pack(method, contents, server, version=generation)
        model_file.apply_to_file(device, data)
    assert package.fingerprint(model_file.load(device)) == package.fingerprint(server)
    assert model_file.read(device).version == 5
    for name in server:
        np.testing.assert_array_equal(model_file.load(device)[name], server[name])


def test_a_crash_while_writing_leaves_the_old_model(tmp_path, monkeypatch):
    base = _flat()
    device = tmp_path / "model.safetensors"
    model_file.save(device, base)
    before = device.read_bytes()
    data, _ = package.pack("topk", _all_ops(base)[:1], base)

    def crash(*args):
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        model_file.apply_to_file(device, data)
    assert device.read_bytes() == before and os.listdir(tmp_path) == ["model.safetensors"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_bytes_only_ever_raise_package_errors(data):
    with pytest.raises(package.PackageError):
        package.decode(package.MAGIC + struct.pack("<H", 1) + data)
    with pytest.raises(package.PackageError):
        package.decode(data)


_BASE = _flat()
_VALID = package.pack("mixed", _all_ops(_BASE), _BASE)[0]
_HEADER_LEN = struct.unpack_from("<I", _VALID, 10)[0]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_headers_and_payloads_with_valid_checksums_raise_package_errors(data):
    """Mutations past the checksum: a random header field, or random payload bytes."""
    header = json.loads(_VALID[14:14 + _HEADER_LEN])
    payload_at = 14 + _HEADER_LEN + 8
    payload = bytearray(_VALID[payload_at:-34])
    if data.draw(st.booleans()):
        tensor = data.draw(st.sampled_from(header["tensors"]))
        key = data.draw(st.sampled_from(sorted(tensor)))
        tensor[key] = data.draw(st.one_of(st.none(), st.integers(-2**70, 2**70), st.floats(),
                                          st.text(max_size=8), st.lists(st.integers(-3, 10**6),
                                                                        max_size=4)))
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    raw = json.dumps(header).encode()
    body = (package.MAGIC + struct.pack("<HI", 1, len(raw)) + raw
            + struct.pack("<Q", len(payload)) + bytes(payload) + b"\0\0")
    try:
        pkg = package.decode(body + hashlib.sha256(body).digest())
    except package.PackageError:
        return
    # Whatever decodes must apply or be refused cleanly.
    try:
        package.apply(pkg, _BASE)
    except package.PackageError:
        pass


# -- baselines ---------------------------------------------------------------------------

def test_svd_delta_recovers_a_low_rank_change_exactly_when_it_fits():
    old = _flat()
    rng = np.random.default_rng(2)
    new = dict(old)
    change = (rng.normal(size=(24, 2)) @ rng.normal(size=(2, 64))).astype(np.float32)
    new["encoder/layers_0/input_kernel"] = old["encoder/layers_0/input_kernel"] + change
    contents = posthoc.svd_delta(old, new, ["encoder/layers_0/input_kernel"], 10_000, "fp32")
    assert [(t.name, t.u.shape[1]) for t in contents][0][0] == "encoder/layers_0/input_kernel"
    _, result = package.pack("svd", contents, old)
    np.testing.assert_allclose(result["encoder/layers_0/input_kernel"],
                               new["encoder/layers_0/input_kernel"], atol=1e-5)


def test_zstd_patch_is_lossless_and_small_for_a_small_change():
    old = _flat()
    new = dict(old)
    new["output_kernel"] = old["output_kernel"] + 1.0
    old_file, new_file = model_file.to_bytes(old), model_file.to_bytes(new)
    size = posthoc.zstd_patch_size(old_file, new_file)
    assert size < 0.25 * len(new_file)


# -- CLI ---------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "neuraldiff.cli", *args], cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_cli_keygen_pack_verify_apply_and_refusals(tmp_path):
    base, target = _flat(), _moved(_flat(), 3)
    model_file.save(tmp_path / "base.safetensors", base)
    model_file.save(tmp_path / "new.safetensors", target)
    model_file.save(tmp_path / "device.safetensors", base)
    model_file.save(tmp_path / "other.safetensors", _flat(9))
    p = lambda name: str(tmp_path / name)  # noqa: E731
    assert _cli("keygen", f"--private_key={p('k.pem')}", f"--public_key={p('k.pub')}"
                ).returncode == 0
    out = _cli("pack", f"--base={p('base.safetensors')}", f"--target={p('new.safetensors')}",
               "--method=topk", "--budget_percent=20", f"--signing_key={p('k.pem')}",
               f"--out={p('u.ndiff')}")
    assert out.returncode == 0, out.stderr
    packed = json.loads(out.stdout)
    assert packed["signed"] and packed["percent_of_model"] <= 20
    out = _cli("verify", f"--package={p('u.ndiff')}", f"--base={p('base.safetensors')}",
               f"--public_key={p('k.pub')}")
    assert out.returncode == 0 and "matches" in out.stdout, out.stderr
    refused = _cli("apply", f"--package={p('u.ndiff')}", f"--model={p('other.safetensors')}")
    assert refused.returncode == 1 and "wrong base model" in refused.stderr
    out = _cli("apply", f"--package={p('u.ndiff')}", f"--model={p('device.safetensors')}",
               f"--public_key={p('k.pub')}", "--require_signature")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["fingerprint"] == packed["result_fingerprint"]
    assert json.loads(out.stdout)["version"] == packed["version"] == 1
    replayed = _cli("apply", f"--package={p('u.ndiff')}", f"--model={p('device.safetensors')}")
    assert replayed.returncode == 1 and "at version 1; the package makes version 1: refused" \
        in replayed.stderr
    # Packing against the updated model (version 1): version 2 by default, 1 refused.
    again = _cli("pack", f"--base={p('device.safetensors')}", f"--target={p('base.safetensors')}",
                 "--method=full", f"--out={p('v2.ndiff')}")
    assert again.returncode == 0 and json.loads(again.stdout)["version"] == 2, again.stderr
    stale = _cli("pack", f"--base={p('device.safetensors')}", f"--target={p('base.safetensors')}",
                 "--method=full", "--version=1", f"--out={p('v1.ndiff')}")
    assert stale.returncode == 1 and "--version=1 is not newer" in stale.stderr

    # A learned sparse diff file, fitted to a budget at packing time.
    rng = np.random.default_rng(0)
    names = tree.Selector().names(tree.unflatten(base))
    diff = {n: rng.normal(size=base[n].shape).astype(np.float32) for n in names}
    mask = {n: rng.random(base[n].shape) < 0.5 for n in names}
    model_file.save_diff(tmp_path / "diff.safetensors", "sparse",
                         {"diff": diff, "diff_mask": mask})
    out = _cli("pack", f"--base={p('base.safetensors')}", f"--diff={p('diff.safetensors')}",
               "--budget_bytes=2000", f"--out={p('d.ndiff')}")
    assert out.returncode == 0 and json.loads(out.stdout)["bytes"] <= 2000, out.stderr
    unsigned = _cli("apply", f"--package={p('d.ndiff')}", f"--model={p('base.safetensors')}",
                    f"--public_key={p('k.pub')}", "--require_signature")
    assert unsigned.returncode == 1 and "not signed" in unsigned.stderr
    missing = _cli("verify", f"--package={p('nothing.ndiff')}")
    assert missing.returncode == 1 and "cannot read package" in missing.stderr


def test_model_files_are_the_same_bytes_in_every_process(tmp_path):
    """safetensors orders metadata by a per-process hash: model files (and so zstd patch sizes
    and any file hash) would differ between runs of the same experiment."""
    params = _flat()
    metadata = {f"key{i}": f"value {i}" for i in range(8)}
    here = model_file.to_bytes(params, version=3, metadata=metadata)
    path = tmp_path / "params.safetensors"
    model_file.save(path, params)
    code = ("import sys; from neuraldiff import model_file; "
            "params = model_file.load(sys.argv[1]); "
            "sys.stdout.buffer.write(model_file.to_bytes(params, version=3, "
            f"metadata={metadata!r}))")
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, env=cpu_env(),
                             capture_output=True, timeout=HANG_GUARD_S)
        assert out.returncode == 0, out.stderr
        assert out.stdout == here
    loaded = model_file.from_bytes(here)
    assert package.fingerprint(loaded) == package.fingerprint(params)
