"""The successive-update experiment end to end on the tiny corpus: every method trains (or
is derived), is packed within its budget, goes through the device path, and is reported."""

import json
import subprocess
import sys

import numpy as np

from experiments import compare
from neuraldiff import model_file, package
from tests.conftest import HANG_GUARD_S, tiny_name
from tests.test_train import ROOT, _env


def test_one_generation_of_every_method_through_the_entry_point(tiny_data_dir, tiny_dense_run,
                                                                 tmp_path):
    workdir = tmp_path / "nd"

    def run_experiment():
        out = subprocess.run(
            [sys.executable, "-m", "experiments.neuraldiff_generations",
             f"--config={ROOT}/experiments/configs/neuraldiff.py:tiny",
             f"--config.base_run={tiny_dense_run}", f"--config.data.name={tiny_name(0)}",
             f"--data_dir={tiny_data_dir}", f"--workdir={workdir}",
             "--config.sparse_budgets=0.05"],
            cwd=ROOT, env=_env(), text=True, capture_output=True, timeout=HANG_GUARD_S)
        assert out.returncode == 0, out.stderr[-4000:]
        return out

    out = run_experiment()
    results = {r["chain"]: r for r in json.loads((workdir / "results.json").read_text())}
    assert sorted(results) == ["compressed_10pct", "full", "hashed_10pct", "sparse_10pct",
                               "sparse_5pct", "svd_10pct", "topk_10pct", "zstd"]
    for name, r in results.items():
        assert set(r["wer"]) == {"g0", "g1"} and all(0 <= w <= 2 for w in r["wer"].values())
        if r["budget"] is not None:
            assert r["update_bytes"] <= r["budget_bytes"], name
        if name == "zstd":
            continue
        # The device model is what the package says, and the package decodes.
        device = model_file.load(workdir / name / "g1" / "model.safetensors")
        pkg = package.decode((workdir / name / "g1" / "update.ndiff").read_bytes())
        assert package.fingerprint(device) == pkg.result_fingerprint == r["fingerprint"]
        assert pkg.size == r["update_bytes"]
    base = model_file.load(workdir / "full" / "g1" / "model.safetensors")
    assert results["zstd"]["wer"] == results["full"]["wer"]  # lossless
    assert results["full"]["update_bytes"] > sum(v.nbytes for v in base.values())

    # The learned sparse diffs changed the model only where their packages say.
    sparse = package.decode((workdir / "sparse_5pct" / "g1" / "update.ndiff").read_bytes())
    assert {t.op for t in sparse.tensors} == {"add_sparse"}
    kept = sum(t.indices.size for t in sparse.tensors)
    assert kept == results["sparse_5pct"]["kept"] > 0
    assert kept < sum(t.indices.size for t in package.decode(
        (workdir / "sparse_10pct" / "g1" / "update.ndiff").read_bytes()).tensors)
    hashed = package.decode((workdir / "hashed_10pct" / "g1" / "update.ndiff").read_bytes())
    assert sum(t.values.size for t in hashed.tensors) == results["hashed_10pct"]["buckets"]
    assert any(np.abs(t.values).max() > 0 for t in hashed.tensors)  # h was trained

    assert results["sparse_5pct"]["distance_to_full"] > 0 and "distance_to_full" not in \
        results["full"]
    table = (workdir / "results.md").read_text()
    assert "| chain (last model) | g0 test | g1 test |" in table
    assert "| sparse_5pct |" in table and "beats" in table
    for plot in ("wer_vs_generation.png", "wer_vs_bytes.png"):
        assert (workdir / plot).stat().st_size > 10_000
    assert "| full |" in out.stdout

    # Every update is also a result in the shared schema, with the bytes shipped, ready for
    # experiments.compare (same test set: g1).
    records = compare.compare([str(workdir / name / "g1") for name in results if name != "zstd"])
    for record in records:
        chain = record["run"].removesuffix("_g1")
        assert record["update_bytes"] == results[chain]["update_bytes"]
        assert record["wer_greedy"] == results[chain]["wer"]["g1"]
    assert (compare.plots(records, tmp_path)[-1]).name == "update_bytes.png"

    # Re-running resumes: nothing is trained again, the same results come back.
    first = (workdir / "results.json").read_text()
    assert "g1 step" in out.stderr  # training steps are logged
    again = run_experiment()
    assert json.loads((workdir / "results.json").read_text()) == json.loads(first)
    assert "g1 step" not in again.stderr  # no training step was logged
