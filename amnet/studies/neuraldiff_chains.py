"""Successive model updates over corpus generations, one chain per (method, budget).

A chain starts from the g0 model. For g = 1..G it builds the update of its method from the
chain's previous model on generation g's data, packs it (`neuraldiff.package`), applies the
package to a device model file (`neuraldiff.model_file.apply_to_file`, exactly the device path),
and evaluates the result on the test split of every generation so far. Methods:

  full        full fine-tune, the whole fp32 model shipped (accuracy upper bound, full size)
  sparse      learned sparse diff (ours)          hashed   learned hashed diff (ours)
  topk        full fine-tune, top-k of the delta   svd      full fine-tune, low-rank delta
  compressed  full fine-tune, the new model pruned and int8-quantized
  zstd        the full chain's models as zstd --patch-from deltas (lossless; bytes only)

Everything a step produces goes to `<workdir>/<chain>/g<g>/` (update.ndiff, model.safetensors,
result.json, the transcripts of its own test split in outputs.jsonl and of the earlier ones
in outputs_g<k>.jsonl); a finished step is never redone, so an interrupted experiment resumes.
The g0 model's transcripts of every test split are kept in `<workdir>/base/`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from amnet.data.corpus import grammar
from amnet.evaluation import results as results_io
from amnet.evaluation.metrics import word_errors, word_recall
from amnet.studies.update_trainer import UpdateTrainer, selector, with_base_frontend
from amnet.training import checkpointing, rundir
from experiments.configs.neuraldiff import METHODS
from neuraldiff import model_file, package, posthoc, tree, updates

BUDGETED = ("sparse", "hashed", "topk", "svd", "compressed")


def earlier_outputs(generation: int) -> str:
    """File name of a chain step's transcripts of an earlier generation's test split (the
    step's own generation: `amnet.evaluation.results.OUTPUTS`)."""
    return f"outputs_g{generation}.jsonl"
FINETUNED = ("full", "topk", "svd", "compressed")


def scores(transcripts: dict[int, list]) -> tuple[dict[str, float], dict[str, dict]]:
    """Greedy WER on each generation's test split `{'g<k>': wer}`, and the recall of the
    words each generation k >= 1 introduced (`grammar.Grammar(k).new_words()`) on its own
    test split `{'g<k>': {'recall', 'recognized', 'occurrences'}}`."""
    wer, recall = {}, {}
    for k, outputs in sorted(transcripts.items()):
        references, hypotheses = [o.reference for o in outputs], [o.greedy for o in outputs]
        wer[f"g{k}"] = word_errors(references, hypotheses).rate
        if k:
            found = word_recall(references, hypotheses, grammar.Grammar(k).new_words())
            recall[f"g{k}"] = {"recall": found.rate, "recognized": found.recognized,
                               "occurrences": found.occurrences}
    return wer, recall


@dataclasses.dataclass(frozen=True)
class Chain:
    method: str
    budget: float | None = None  # share of the fp32 model's bytes

    @property
    def name(self) -> str:
        return self.method if self.budget is None else f"{self.method}_{self.budget * 100:g}pct"


def chains(config: ml_collections.ConfigDict) -> list[Chain]:
    """The chains the config asks for, the shared budgets first and the sparse diff's extra
    budgets last (zstd is derived from the full chain, not trained)."""
    out = []
    for method in methods(config):
        if method in BUDGETED:
            out += [Chain(method, b) for b in config.budgets]
        elif method == "full" or (method == "zstd" and "full" not in methods(config)):
            out.append(Chain("full"))
        elif method != "zstd":
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if "sparse" in methods(config):
        out += [Chain("sparse", b) for b in config.sparse_budgets if b not in config.budgets]
    return out


def methods(config: ml_collections.ConfigDict) -> list[str]:
    """`config.methods`, also when given on the command line as one comma-separated string
    (`--config.methods=sparse,full` arrives as `('sparse,full',)`)."""
    return [m.strip() for entry in config.methods for m in entry.split(",") if m.strip()]


def define_flags(config_help: str, workdir_help: str) -> None:
    """--config, --workdir and --data_dir of the neural-diff entry points (defined when one
    runs, so that importing them defines no flag)."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", "experiments/configs/neuraldiff.py:small",
                                    config_help)
    flags.DEFINE_string("workdir", "runs/neuraldiff", workdir_help)
    flags.DEFINE_string("data_dir", None, "TFDS data dir (overrides the config's).")


def config_from_flags(argv) -> ml_collections.ConfigDict:
    """The experiment config of `define_flags`' flags, with --data_dir applied."""
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = flags.FLAGS.config
    if flags.FLAGS.data_dir:
        config.data.data_dir = flags.FLAGS.data_dir
    return config


def check_base_run(config: ml_collections.ConfigDict) -> None:
    """The base run's model and frontend must be the config's (CMVN statistics from
    `with_base_frontend`)."""
    if not config.base_run:
        raise ValueError("set --config.base_run to the run directory of the g0 model")
    stored = rundir.read_run_config(config.base_run)
    for block in ("model", "frontend"):  # options added since are compared at their default
        if rundir.identity_block(block, stored[block].to_dict()) != rundir.identity_block(
                block, config[block].to_dict()):
            raise ValueError(f"{config.base_run} was trained with another {block} block: "
                             f"{stored[block].to_dict()} vs {config[block].to_dict()}")


class Experiment:
    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path):
        if not config.base_run:
            raise ValueError("set --config.base_run to the run directory of the g0 model")
        config = with_base_frontend(config)
        check_base_run(config)
        self.config = config
        self.workdir = Path(workdir)
        self.trainer = UpdateTrainer(config)
        params, _ = checkpointing.load_params(config.base_run)
        self.base = updates.flat(params)
        self.names = selector(config).names(tree.unflatten(self.base))
        self.model_bytes = updates.model_bytes(self.base)

    def budget_bytes(self, chain: Chain) -> int | None:
        return None if chain.budget is None else updates.budget_bytes(self.base, chain.budget)

    def _finetuned(self, params, generation: int):
        """The full fine-tune of `params` on a generation, cached by the model's fingerprint
        (at g1 every fine-tuning chain starts from the same model)."""
        path = (self.workdir / "finetunes"
                / f"{package.fingerprint(params)[:16]}_g{generation}.safetensors")
        if path.exists():
            return model_file.load(path)
        new = self.trainer.finetune(params, generation)
        path.parent.mkdir(parents=True, exist_ok=True)
        model_file.save(path, new)
        return new

    def _contents(self, chain: Chain, params, generation: int) -> tuple[list, dict]:
        budget = self.budget_bytes(chain)
        coding = self.config.diff.coding
        if chain.method in ("sparse", "hashed"):
            train = (self.trainer.sparse_diff if chain.method == "sparse"
                     else self.trainer.hashed_diff)
            collections, info = train(params, generation, budget)
            shapes = {n: params[n].shape for n in collections["diff"]}
            contents, kept = updates.from_diff(chain.method, collections, shapes, coding, budget)
            return contents, {**info, **kept}
        new = self._finetuned(params, generation)
        if chain.method == "full":
            return posthoc.full_model(new), {}
        if chain.method == "topk":
            return posthoc.topk_delta(params, new, self.names, budget, coding), {}
        if chain.method == "svd":
            return posthoc.svd_delta(params, new, self.names, budget, coding), {}
        return posthoc.compressed_model(new, self.names, budget,
                                        self.config.compressed.coding), {}

    def run_chain(self, chain: Chain) -> list[dict]:
        params, results = self.base, []
        for g in range(1, self.config.generations + 1):
            step_dir = self.workdir / chain.name / f"g{g}"
            result_file = step_dir / "result.json"
            if result_file.exists():
                results.append(json.loads(result_file.read_text()))
                params = model_file.load(step_dir / "model.safetensors")
                continue
            start = time.perf_counter()
            contents, info = self._contents(chain, params, g)
            data, server_model = package.pack(chain.method, contents, params,
                                              budget_bytes=self.budget_bytes(chain), version=g)
            train_seconds = time.perf_counter() - start
            # The device: its model file holds the previous model; the package is applied to it.
            step_dir.mkdir(parents=True, exist_ok=True)
            device_file = step_dir / "model.safetensors"
            model_file.save(device_file, params, version=g - 1)
            model_file.apply_to_file(device_file, data)
            params = model_file.load(device_file)
            if package.fingerprint(params) != package.fingerprint(server_model):
                raise AssertionError(f"{chain.name} g{g}: device model differs from the server's")
            (step_dir / "update.ndiff").write_bytes(data)
            # The new generation's test set in the shared results schema (with the bytes
            # shipped), the earlier ones as transcripts (forgetting, recall of their words).
            outputs, record = self.trainer.run_metrics(
                params, g, run=f"{chain.name}_g{g}", update_bytes=len(data),
                train_time_s=train_seconds)
            results_io.write_outputs(step_dir / results_io.OUTPUTS, outputs)
            results_io.write_metrics(step_dir / results_io.METRICS, record)
            transcripts = {g: outputs}
            for k in range(g):
                transcripts[k] = self.trainer.outputs(params, k)
                results_io.write_outputs(step_dir / earlier_outputs(k), transcripts[k])
            wer, recall = scores(transcripts)
            result = {"chain": chain.name, "method": chain.method, "budget": chain.budget,
                      "budget_bytes": self.budget_bytes(chain), "generation": g,
                      "update_bytes": len(data), "model_bytes": self.model_bytes,
                      "update_percent": 100 * len(data) / self.model_bytes,
                      "wer": wer, "new_word_recall": recall, "seconds": train_seconds,
                      "fingerprint": package.fingerprint(params), **info}
            result_file.write_text(json.dumps(result, indent=2))
            logging.info("%s g%d: %d bytes (%.2f%%), WER %s", chain.name, g, len(data),
                         result["update_percent"], {k: f"{v:.3f}" for k, v in wer.items()})
            results.append(result)
        return results

    def base_result(self) -> dict:
        """The g0 model on every generation's test split: WER and new-word recall before
        any update (`<workdir>/base/`, computed once)."""
        out_dir = self.workdir / "base"
        result_file = out_dir / "result.json"
        if result_file.exists():
            return json.loads(result_file.read_text())
        out_dir.mkdir(parents=True, exist_ok=True)
        transcripts = {}
        for k in range(self.config.generations + 1):
            transcripts[k] = self.trainer.outputs(self.base, k)
            results_io.write_outputs(out_dir / earlier_outputs(k), transcripts[k])
        wer, recall = scores(transcripts)
        result = {"chain": "base", "method": "base", "budget": None, "generation": 0,
                  "wer": wer, "new_word_recall": recall,
                  "fingerprint": package.fingerprint(self.base)}
        result_file.write_text(json.dumps(result, indent=2))
        return result

    def zstd_results(self) -> list[dict]:
        """The full chain's models shipped as zstd patches of the model files (lossless: the
        models and WERs are the full chain's)."""
        previous = model_file.to_bytes(self.base)
        out = []
        for g in range(1, self.config.generations + 1):
            step_dir = self.workdir / "full" / f"g{g}"
            full = json.loads((step_dir / "result.json").read_text())
            current = (step_dir / "model.safetensors").read_bytes()
            size = posthoc.zstd_patch_size(previous, current)
            out.append({**full, "chain": "zstd", "method": "zstd", "update_bytes": size,
                        "update_percent": 100 * size / self.model_bytes})
            previous = current
        return out

    def distance_to_full(self, chain: str, generation: int) -> float:
        """||θ_chain - θ_full|| / ||θ_full - θ_g0|| at a generation: how far a chain's model is
        from the full fine-tune chain's, relative to how far that one moved from g0."""
        ours = model_file.load(self.workdir / chain / f"g{generation}" / "model.safetensors")
        full = model_file.load(self.workdir / "full" / f"g{generation}" / "model.safetensors")
        gap = sum(float(np.sum((ours[n] - full[n]) ** 2)) for n in sorted(full))
        moved = sum(float(np.sum((full[n] - self.base[n]) ** 2)) for n in sorted(full))
        return float(np.sqrt(gap / moved))
