"""The successive-update experiment end to end on the tiny corpus: every method trains (or
is derived), is packed within its budget, goes through the device path, and is reported."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from amnet.data.corpus import grammar
from amnet.evaluation import compare
from amnet.evaluation import results as results_io
from amnet.evaluation.metrics import word_errors, word_recall
from amnet.studies import neuraldiff_biasing, neuraldiff_chains, update_trainer
from experiments import neuraldiff_generations
from experiments.configs import neuraldiff as neuraldiff_config
from neuraldiff import model_file, package
from tests.helpers import HANG_GUARD_S, ROOT, cpu_env, tiny_name


@pytest.mark.slow
def test_one_generation_of_every_method_through_the_entry_point(tiny_data_dir, tiny_dense_run,
                                                                 tmp_path, monkeypatch):
    workdir = tmp_path / "nd"

    def run_experiment():
        out = subprocess.run(
            [sys.executable, "-m", "experiments.neuraldiff_generations",
             f"--config={ROOT}/experiments/configs/neuraldiff.py:tiny",
             f"--config.base_run={tiny_dense_run}", f"--config.data.name={tiny_name(0)}",
             f"--data_dir={tiny_data_dir}", f"--workdir={workdir}",
             "--config.sparse_budgets=0.05"],
            cwd=ROOT, env=cpu_env(), text=True, capture_output=True, timeout=HANG_GUARD_S)
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

    # New-word recall, before any update (the g0 model) and after it, from the transcripts
    # the steps keep of every test split; the gaps to the full chain carry intervals.
    new_words = grammar.Grammar(1).new_words()
    base = json.loads((workdir / "base" / "result.json").read_text())
    for step in (base, *(r for name, r in results.items() if name != "zstd")):
        recall = step["new_word_recall"]["g1"]
        outputs = (results_io.read_outputs(workdir / "base" / "outputs_g1.jsonl")
                   if step is base else
                   results_io.read_outputs(workdir / step["chain"] / "g1" / "outputs.jsonl"))
        found = word_recall([o.reference for o in outputs], [o.greedy for o in outputs],
                            new_words)
        assert (recall["recognized"], recall["occurrences"]) == (found.recognized,
                                                                 found.occurrences) != (0, 0)
    g0_outputs = results_io.read_outputs(workdir / "sparse_5pct" / "g1" / "outputs_g0.jsonl")
    assert word_errors([o.reference for o in g0_outputs],
                       [o.greedy for o in g0_outputs]).rate == results["sparse_5pct"]["wer"]["g0"]
    assert "| g0 model, no update |" in table and "| sparse_5pct | " in table
    assert re.search(r"\| sparse_5pct \| [+-]\d+\.\d% \[[+-]\d+\.\d%, [+-]\d+\.\d%\]", table)

    # Every update is also a result in the shared schema, with the bytes shipped, ready for
    # experiments.compare (same test set: g1).
    records = compare.compare([str(workdir / name / "g1") for name in results if name != "zstd"])
    for record in records:
        chain = record["run"].removesuffix("_g1")
        assert record["update_bytes"] == results[chain]["update_bytes"]
        assert record["wer_greedy"] == results[chain]["wer"]["g1"]
    assert (compare.plots(records, tmp_path)[-1]).name == "update_bytes.png"

    # Re-running resumes: nothing is trained again, the same results come back (in this
    # process, with the entry point's config).
    first = (workdir / "results.json").read_text()
    assert "g1 step" in out.stderr  # training steps are logged
    config = neuraldiff_config.get_config("tiny")
    config.base_run, config.data.name = str(tiny_dense_run), tiny_name(0)
    config.data.data_dir, config.sparse_budgets = str(tiny_data_dir), (0.05,)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished step was trained again")

    monkeypatch.setattr(update_trainer.UpdateTrainer, "_train", no_training)
    neuraldiff_generations.run(config, str(workdir))
    assert json.loads((workdir / "results.json").read_text()) == json.loads(first)

    # Contextual biasing toward g1's new words: the zero-byte baseline on the g0 model, and
    # combined with an update.
    report = neuraldiff_biasing.run(config, str(workdir), ["sparse_10pct"], 2.0, [1])
    rows = json.loads((workdir / "biasing" / "results.json").read_text())
    assert [(r["model"], r["decoder"]) for r in rows] == [
        ("g0 model (no update)", "beam"), ("g0 model (no update)", "beam + biasing"),
        ("sparse_10pct_g1", "beam"), ("sparse_10pct_g1", "beam + biasing")]
    assert rows[1]["bias_words"] == len(new_words) and rows[0]["bias_words"] == 0
    assert all(r["occurrences"] == base["new_word_recall"]["g1"]["occurrences"] for r in rows)
    assert "| g1 | g0 model (no update) | beam + biasing |" in report


def test_a_base_run_from_before_an_added_option_is_accepted_and_a_real_difference_is_not(
        tmp_path):
    config = neuraldiff_config.get_config("tiny")
    config.base_run = str(tmp_path)
    stored = json.loads(config.to_json())
    del stored["model"]["lstm_backward"]  # written before the option existed (its default)
    (tmp_path / "config.json").write_text(json.dumps(stored))
    neuraldiff_chains.check_base_run(config)
    stored["model"]["encoder_hidden"] += 1
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="trained with another model block"):
        neuraldiff_chains.check_base_run(config)
