"""Training model updates for the neural-diff experiments: a full fine-tune, a learned sparse
diff and a learned hashed diff of the RNN-T on one corpus generation, with the project's data
pipeline and data-parallel train step (`amnet.training.step`, with the diff as the trained
parameters and the base model frozen).

Models go in and out as flat NumPy dicts (`neuraldiff.tree` names), the form of model files
and packages.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from amnet import build
from amnet.data import datasets, input_pipeline
from amnet.evaluation import decode_fns, evaluator, routing, scoring
from amnet.rnnt import cmvn, decoding, objective
from amnet.training import loop, parallel
from amnet.training import step as train_step
from neuraldiff import hashed, sparse, tree, updates
from neuraldiff.tree import Selector

Flat = dict[str, np.ndarray]


def generation_name(name: str, generation: int) -> str:
    """`spoken_commands/small_g0` -> `spoken_commands/small_g3` (the generation's dataset)."""
    new, count = re.subn(r"_g\d+", f"_g{generation}", name, count=1)
    if not count:
        raise ValueError(f"dataset {name!r} has no generation (_g<k>) in its name")
    return new


def selector(config: ml_collections.ConfigDict) -> Selector:
    return Selector(config.diff.min_ndim, config.diff.include, config.diff.exclude)


def with_base_frontend(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the CMVN statistics of its base run (`base_run`/config.json): updates
    see the features the base model was trained on."""
    return cmvn.resolve(config, stored=Path(config.base_run) / "config.json")


class UpdateTrainer:
    """Trains updates of one model; compiled steps are shared by all updates of a kind."""

    def __init__(self, config: ml_collections.ConfigDict):
        config = with_base_frontend(config) if config.get("base_run") else config
        self.config = config
        self.tokenizer = build.tokenizer(config)
        self.front, self.augment = build.frontend_configs(config)
        self.model = build.model(config, self.tokenizer.vocab_size)
        self.mesh = parallel.make_mesh(config.train.num_devices)
        self.optimizer = build.optimizer(config)
        loss = objective.rnnt_objective(self.model, config.get("loss"))
        make = lambda merge: train_step.make_train_step(  # noqa: E731
            self.model, self.optimizer, self.mesh, self.front, self.augment, loss, merge=merge,
            normalization=build.loss_normalization(config))
        self._steps = {
            "full": make(None),
            "sparse": make(lambda f, d: sparse.merge(f["params"], d, f["mask"])),
            "hashed": make(lambda f, h: hashed.merge(f["params"], h, f["seeds"])),
        }
        self.decode = decode_fns.make_decoder(
            self.model, self.front, beam=0, max_length=config.eval.max_length,
            max_symbols_per_frame=config.eval.max_symbols_per_frame)
        self.route = routing.make_router(self.model, self.front)
        self._train_data: dict[int, tuple] = {}
        self._test_data: dict[int, tuple] = {}

    # -- data ------------------------------------------------------------------------------

    def data_config(self, generation: int) -> ml_collections.ConfigDict:
        """The config with the corpus of `generation` (its splits: train, test)."""
        config = self.config.copy_and_resolve_references()
        config.data.name = generation_name(config.data.name, generation)
        return config

    def _batches(self, generation: int):
        if generation not in self._train_data:
            config = self.data_config(generation)
            source = datasets.open_dataset(config, config.data.train_split)
            if self.config.get("base_replay", 0.0):
                base = datasets.open_dataset(self.data_config(0), config.data.train_split)
                source = datasets.with_replay(source, base, self.config.base_replay,
                                              seed=self.config.seed + generation)
            pipe = datasets.pipeline_config(config, batch_size=self.config.train.global_batch_size,
                                           train=True)
            self._train_data[generation] = (source, input_pipeline.scan(
                source, self.tokenizer, pipe), pipe)
        source, report, pipe = self._train_data[generation]
        return iter(input_pipeline.make_dataset(source, self.tokenizer, report, pipe,
                                                process_index=jax.process_index(),
                                                process_count=jax.process_count()))

    def _test_split(self, generation: int):
        if generation not in self._test_data:
            config = self.data_config(generation)
            self._test_data[generation] = datasets.open_eval_split(
                config, config.data.test_split, self.tokenizer)
        return self._test_data[generation]

    def word_error_rate(self, params: Flat, generation: int) -> float:
        """Greedy WER of a flat model on the test split of `generation`."""
        counts = evaluator.evaluate(self.decode, self._replicated(tree.unflatten(params)),
                                  self._test_split(generation), self.tokenizer, self.mesh)
        return counts.rate

    def outputs(self, params: Flat, generation: int) -> list:
        """Greedy transcripts (`amnet.evaluation.results.UtteranceOutput`) of a flat model on the
        test
        split of `generation`."""
        return evaluator.transcribe({"greedy": self.decode}, self.route,
                                  self._replicated(tree.unflatten(params)),
                                  self._test_split(generation), self.tokenizer, self.mesh)

    def beam_decoder(self, fusion: decoding.Fusion | None = None):
        """Beam search of `eval.beam`, with `fusion` (contextual biasing, an LM) if given;
        build one per automaton and reuse it (each compiles once)."""
        return decode_fns.make_decoder(
            self.model, self.front, beam=self.config.eval.beam, fusion=fusion,
            max_length=self.config.eval.max_length,
            max_symbols_per_frame=self.config.eval.max_symbols_per_frame)

    def beam_outputs(self, params: Flat, generation: int, beam) -> list:
        """Transcripts of a flat model on the test split of `generation`: greedy, and the
        `beam` decoder's (`beam_decoder`) in `.beam`."""
        return evaluator.transcribe({"greedy": self.decode, "beam": beam}, self.route,
                                  self._replicated(tree.unflatten(params)),
                                  self._test_split(generation), self.tokenizer, self.mesh)

    def run_metrics(self, params: Flat, generation: int, *, run: str, update_bytes: int,
                    train_time_s: float) -> tuple[list, dict]:
        """(outputs, metrics.json record) of a flat model on the test split of `generation`,
        in the shared results schema (`amnet.evaluation.results`), greedy decoding."""
        outputs = self.outputs(params, generation)
        config = self.data_config(generation)
        return outputs, scoring.run_metrics(
            outputs, run=run, framework="jax", dataset=config.data.name,
            split=config.data.test_split, model=self.model.config,
            latency=scoring.LatencyModel.of(self.model.config),
            config=json.loads(config.to_json()), train_time_s=train_time_s,
            hardware=evaluator.hardware(), update_bytes=update_bytes)

    # -- training --------------------------------------------------------------------------

    def _replicated(self, value):
        return parallel.replicated(self.mesh, value)

    def _train(self, kind: str, trainable, frozen, generation: int,
               prune: loop.Hook | None = None) -> train_step.TrainState:
        """`train.steps` steps of the shared loop (`amnet.training.loop.fit`) on the
        generation's data; `prune`: a hook that reshapes a sparse diff."""
        rng = jax.random.key_data(jax.random.fold_in(jax.random.key(self.config.seed),
                                                     generation))
        state = train_step.new_state(trainable, self.optimizer, rng, self.mesh, frozen)
        start = time.perf_counter()

        def log(step, state, metrics):
            if step % self.config.train.log_every == 0:
                logging.info("%s g%d step %d: loss %.3f (%.1f s)", kind, generation, step,
                             float(metrics["loss"]), time.perf_counter() - start)

        state, _ = loop.fit(self._steps[kind], state, self._batches(generation),
                            loop.global_batches(self.mesh),
                            range(1, self.config.train.steps + 1),
                            max_nonfinite_steps=self.config.train.max_nonfinite_steps,
                            hooks=[h for h in (prune, log) if h is not None])
        return state

    def finetune(self, params: Flat, generation: int) -> Flat:
        """Every parameter trained on the generation's data."""
        state = self._train("full", tree.unflatten(params), None, generation)
        return updates.flat(jax.device_get(state.params))

    def sparse_diff(self, params: Flat, generation: int, budget_bytes: int,
                    ) -> tuple[dict[str, Flat], dict]:
        """A learned sparse diff: dense, pruned on the cubic schedule down to the budget (the
        last pruning step fits the real package size), then fine-tuned with the mask fixed.
        Returns its collections `{'diff', 'diff_mask'}` (flat) and {entries}."""
        c, coding = self.config.sparse, self.config.diff.coding
        nested = tree.unflatten(params)
        variables = sparse.init(nested, selector(self.config))
        total = sparse.count(variables["diff_mask"])[1]
        schedule: list[Callable] = []  # built at begin_step from the budget's density there

        def fit(diff, mask) -> int:
            """Entries of the largest budget-fitting diff within the mask."""
            collections = {"diff": tree.flatten(diff), "diff_mask": tree.flatten(mask)}
            return updates.from_diff("sparse", collections, {}, coding, budget_bytes,
                                     c.scope)[1]["kept"]

        def hook(step, state, metrics):
            if step < c.begin_step or step > c.end_step:
                return state
            if (step - c.begin_step) % c.every and step != c.end_step:
                return state
            diff = jax.device_get(state.params)
            mask = jax.device_get(state.frozen["mask"])
            if not schedule:
                schedule.append(sparse.density_schedule(fit(diff, mask) / total, c.begin_step,
                                                        c.end_step, c.power))
            keep = fit(diff, mask) if step == c.end_step else \
                int(round(float(schedule[0](step)) * total))
            diff, mask = sparse.prune(diff, mask, keep, c.scope)
            return state.replace(params=self._replicated(diff),
                                 frozen={**state.frozen, "mask": self._replicated(mask)})

        state = self._train("sparse", variables["diff"],
                            {"params": nested, "mask": variables["diff_mask"]}, generation, hook)
        return ({"diff": tree.flatten(jax.device_get(state.params)),
                 "diff_mask": tree.flatten(jax.device_get(state.frozen["mask"]))},
                {"entries": total})

    def hashed_diff(self, params: Flat, generation: int, budget_bytes: int,
                    ) -> tuple[dict[str, Flat], dict]:
        """A learned hashed diff with the most buckets the budget allows. Returns its
        collections `{'diff', 'diff_hash'}` (flat) and {buckets, entries}."""
        nested = tree.unflatten(params)
        names = selector(self.config).names(nested)
        shapes = {n: params[n].shape for n in names}
        buckets = updates.bucket_count(shapes, budget_bytes, self.config.diff.coding)
        variables = hashed.init(nested, buckets, self.config.hashed.seed, selector(self.config))
        state = self._train("hashed", variables["diff"],
                            {"params": nested, "seeds": variables["diff_hash"]}, generation)
        return ({"diff": tree.flatten(jax.device_get(state.params)),
                 "diff_hash": tree.flatten(jax.device_get(state.frozen["seeds"]))},
                {"buckets": int(sum(buckets.values())),
                 "entries": int(sum(np.prod(s) for s in shapes.values()))})
