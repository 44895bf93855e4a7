"""The training loop: data, model, data-parallel steps, evaluation, checkpoints, metrics.

`train_and_evaluate(config, workdir)` is the whole run; `experiments/train.py` is its absl
entry point. The run directory receives config.json (the resolved config), metrics.jsonl,
tensorboard/, checkpoints/{latest,best}/, results.json (final test WER, greedy and beam), and
the run's results in the shared schema (`amnet.evaluation.results`): outputs.jsonl and metrics.json.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from amnet import build
from amnet.amortized import objective, pruning, warm_start
from amnet.build import frontend_configs, model_config
from amnet.data import input_pipeline
from amnet.data.corpus import spoken_commands
from amnet.data.input_pipeline import PipelineConfig
from amnet.data.text import CharTokenizer, SentencePieceTokenizer
from amnet.evaluation import metrics, scoring
from amnet.evaluation import results as results_io
from amnet.evaluation import routing as routing_report
from amnet.rnnt import cmvn, decoding, lm
from amnet.rnnt.transducer import Transducer, TransducerConfig
from amnet.training import checkpointing, optim
from amnet.training import step as train_step
from amnet.training.metric_writers import MetricWriter


class RunDirError(ValueError):
    """The run directory cannot be used as asked."""


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class Preemption:
    """While active, SIGTERM and SIGINT only set `signal_name`: the loop saves a checkpoint
    after the step in flight and returns (spot and preemptible VMs send SIGTERM first)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# The config blocks that make a run what it is: a run continues only with the same ones.
IDENTITY = ("data", "frontend", "model", "loss", "optimizer", "seed", "amnet", "pruning", "init")


# Options added after runs were written, with the value that keeps the earlier behaviour: a
# block holding one of them at that value compares equal to a block without it, so that runs
# and checkpoints written before the option existed still resume.
ADDED_OPTIONS = {"data": {"speed_factors": list(PipelineConfig.speed_factors)},
                 "model": {"loss": TransducerConfig.loss,
                           "prune_range": TransducerConfig.prune_range},
                 "loss": {"simple_scale": objective.SIMPLE_SCALE,
                          "pruned_warmup_steps": objective.PRUNED_WARMUP_STEPS}}


def identity_block(name: str, block: Any) -> Any:
    """A config block (JSON form) without the added options that are at their old behaviour."""
    added = ADDED_OPTIONS.get(name, {})
    if not isinstance(block, dict):
        return block
    return {k: v for k, v in block.items() if not (k in added and v == added[k])}


def config_differences(previous: dict, current: dict) -> list[str]:
    """The `IDENTITY` blocks in which two configs (JSON form) differ."""
    return sorted(k for k in IDENTITY
                  if identity_block(k, previous.get(k)) != identity_block(k, current.get(k)))


def prepare_run_dir(workdir: Path, config: ml_collections.ConfigDict, resume: bool) -> None:
    """Creates the run dir and stores the config; refuses to mix runs (nothing is overwritten).

    Every process checks before process 0 writes, so that all agree on what they found.
    """
    stored = workdir / "config.json"
    if stored.exists():
        if not resume:
            raise RunDirError(f"run directory {workdir} already holds a run; pass --resume to "
                              "continue it or choose another --workdir")
        changed = config_differences(json.loads(stored.read_text()),
                                     json.loads(config.to_json()))
        if changed:
            raise RunDirError(f"--resume with a config that differs from {stored} in {changed}")
        return
    if resume:
        raise RunDirError(f"--resume: no run in {workdir} (no config.json)")
    _sync("run directory checked")
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        stored.write_text(config.to_json(indent=2))
    _sync("run directory written")


def _agreed(flag: bool) -> bool:
    """True when `flag` is set in any process (all processes must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def read_run_config(workdir: str | Path, data_dir: str | None = None,
                    ) -> ml_collections.ConfigDict:
    """The resolved config a run stored in `workdir` (`prepare_run_dir`); `data_dir` replaces
    its data directory when given (the corpus was built elsewhere)."""
    config = ml_collections.ConfigDict(json.loads((Path(workdir) / "config.json").read_text()))
    if data_dir:
        config.data.data_dir = data_dir
    return config


def open_dataset(config: ml_collections.ConfigDict, split: str):
    """The split's data source; the embedded corpus is built first when missing."""
    builder = spoken_commands.builder_from_name(config.data.name, data_dir=config.data.data_dir)
    if builder is not None:
        if not builder.is_prepared():
            logging.info("building %s", config.data.name)
            builder.download_and_prepare()
    return input_pipeline.open_source(config.data.name, split, config.data.data_dir)


def make_objective(config: ml_collections.ConfigDict, model: Transducer):
    """(objective, constrain): AmNet's loss for two or more branches, plain RNN-T otherwise;
    the pruner when a branch is sparse."""
    branches = model.config.encoder_branches
    loss_config = config.get("loss")
    loss = (objective.amnet_objective(model, config.amnet, loss_config) if len(branches) > 1
            else objective.rnnt_objective(model, loss_config))
    constrain = pruning.make_pruner(branches, config.pruning) if "pruning" in config else None
    if constrain is None and pruning.sparse_branches(branches):
        raise ValueError("a sparse branch needs a `pruning` block in the config")
    return loss, constrain


def warm_started(state: train_step.TrainState, config: ml_collections.ConfigDict,
                 model: Transducer, mesh) -> train_step.TrainState:
    """`state` with params from the dense run `config.init.dense_run`
    (`amnet.amortized.warm_start`)."""
    dense, meta = checkpointing.load_params(config.init.dense_run)
    logging.info("warm start from %s", config.init.dense_run)
    params = warm_start.from_dense(jax.device_get(state.params), dense,
                                   model.config.encoder_branches)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return state.replace(params=jax.device_put(params, replicated))


LM_FILE = "lm.safetensors"
LEXICON_FILE = "lexicon.safetensors"


TEST_DECODERS = ("greedy", "beam", "beam_lm")


def test_decoders(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The decoders a finished run transcribes its test split with (`eval.test_decoders`;
    by default all, `beam_lm` when the config has an `lm` block); the CTC head is scored too."""
    default = TEST_DECODERS if "lm" in config else TEST_DECODERS[:2]
    wanted = tuple(config.eval.get("test_decoders", None) or default)
    unknown = sorted(set(wanted) - set(TEST_DECODERS))
    if unknown or "greedy" not in wanted:
        raise ValueError(f"eval.test_decoders={list(wanted)}: choose from {list(TEST_DECODERS)}, "
                         "greedy included")
    if "beam_lm" in wanted and "lm" not in config:
        raise ValueError("eval.test_decoders has beam_lm but the config has no `lm` block")
    return wanted


def run_lm(config: ml_collections.ConfigDict, workdir: Path, tokenizer, source=None,
           ) -> tuple[list[lm.Automaton], list[float], float]:
    """(automata, weights, length bonus) of the run's shallow fusion (`lm` config block): the
    n-gram LM (and with `lm.lexicon` the lexicon) of the training transcripts, built once into
    the run dir (`lm.safetensors`, `lexicon.safetensors`) and read from there afterwards."""
    c = config.lm
    paths = [workdir / LM_FILE] + ([workdir / LEXICON_FILE] if c.lexicon else [])
    if not all(p.exists() for p in paths):
        sentences = training_transcripts(config, tokenizer, source)
        built = [lm.build_ngram(sentences, tokenizer.vocab_size, c.order)]
        if c.lexicon:
            built.append(lm.build_lexicon(sentences, tokenizer.vocab_size,
                                          _separator(tokenizer)))
        if jax.process_index() == 0:
            for automaton, path in zip(built, paths, strict=True):
                lm.save(path, automaton, tokenizer=str(config.data.tokenizer))
        _sync("language model written")
    automata = [lm.load(p, vocab_size=tokenizer.vocab_size) for p in paths]
    return automata, [c.weight] + ([c.lexicon_weight] if c.lexicon else []), c.length_bonus


def _separator(tokenizer) -> int:
    """The token id of the word separator (a space) of a character tokenizer."""
    ids = tokenizer.encode("a b")
    if len(ids) != 3:
        raise ValueError("the lexicon needs a character tokenizer (a space token between words)")
    return int(ids[1])


def training_transcripts(config: ml_collections.ConfigDict, tokenizer, source=None,
                         ) -> list[list[int]]:
    """The token ids of every transcript of the training split (`source`: its data source)."""
    source = source if source is not None else open_dataset(config, config.data.train_split)
    return [tokenizer.encode(input_pipeline.text_of(source[i]["text"]))
            for i in range(len(source))]


def make_tokenizer(config: ml_collections.ConfigDict):
    if config.data.tokenizer == "char":
        return CharTokenizer()
    if not config.data.tokenizer:
        raise ValueError("config.data.tokenizer is unset: give 'char' or a sentencepiece model "
                         "(python -m experiments.build_tokenizer)")
    tokenizer = SentencePieceTokenizer(config.data.tokenizer)
    expected = config.data.get("vocab_size")
    if expected and tokenizer.vocab_size != expected:
        raise ValueError(f"{config.data.tokenizer} has {tokenizer.vocab_size} pieces, the config "
                         f"expects data.vocab_size={expected}")
    return tokenizer


def pipeline_config(config: ml_collections.ConfigDict, *, batch_size: int, train: bool):
    return input_pipeline.PipelineConfig(
        buckets=tuple(tuple(b) for b in config.data.buckets), global_batch_size=batch_size,
        seed=config.seed, shuffle=train, num_epochs=None if train else 1,
        bad_example_policy=config.data.bad_example_policy,
        max_bad_share=config.data.get("max_bad_share", PipelineConfig.max_bad_share),
        num_threads=config.data.num_threads,
        prefetch_batches=config.data.prefetch_batches,
        speed_factors=tuple(config.data.get("speed_factors", (1.0,))) if train else (1.0,))


def open_eval_split(config: ml_collections.ConfigDict, split: str, tokenizer):
    """(source, scan report, pipeline config) of an evaluation split, validated once."""
    source = open_dataset(config, split)
    pipe = pipeline_config(config, batch_size=config.eval.batch_size, train=False)
    return source, input_pipeline.scan(source, tokenizer, pipe), pipe


def evaluate(decode, params, split, tokenizer, mesh, *, max_batches: int = -1,
             ) -> metrics.ErrorCounts:
    """Word errors of `decode` on `split` (from `open_eval_split`): this process's rows, pooled
    over processes."""
    return validate({"wer": decode}, None, params, split, tokenizer, mesh,
                    max_batches=max_batches)[0]["wer"]


def validate(decoders: dict, probe, params, split, tokenizer, mesh, *, max_batches: int = -1,
             ) -> tuple[dict[str, metrics.ErrorCounts], dict[str, float]]:
    """One pass over `split`: word errors of each decoder {name: decode} and, with `probe`
    (`train_step.make_probe`), the transducer's loss per token as is, with the encoder output
    replaced by its mean, and with another utterance's (`loss_per_token`,
    `probe_loss_per_token`, `swap_loss_per_token`). Counts are pooled over processes."""
    source, report, pipe = split
    counts = {name: metrics.ErrorCounts() for name in decoders}
    sums = np.zeros(4)  # loss, mean-probe loss, swap-probe loss, tokens
    for i, batch in enumerate(input_pipeline.make_dataset(
            source, tokenizer, report, pipe, process_index=jax.process_index(),
            process_count=jax.process_count())):
        if i == max_batches:
            break
        device_batch = train_step.global_batch(batch, mesh)
        rows = np.flatnonzero(batch["weights"])
        refs = [tokenizer.decode(batch["tokens"][r, : batch["token_lengths"][r]]) for r in rows]
        for name, decode in decoders.items():
            tokens, lengths = decode(params, device_batch)
            tokens, lengths = train_step.local_rows(tokens), train_step.local_rows(lengths)
            hyps = [tokenizer.decode(tokens[r, : lengths[r]]) for r in rows]
            counts[name] = counts[name] + metrics.word_errors(refs, hyps)
        if probe is not None:
            plain, mean, swap = (train_step.local_rows(x) for x in probe(params, device_batch))
            sums += [plain[rows].sum(), mean[rows].sum(), swap[rows].sum(),
                     batch["token_lengths"][rows].sum()]
    counts = {name: _pooled(c) for name, c in counts.items()}
    losses = {}
    if probe is not None:
        sums = _pooled_sums(sums)
        losses = {"loss_per_token": sums[0] / sums[3], "probe_loss_per_token": sums[1] / sums[3],
                  "swap_loss_per_token": sums[2] / sums[3]}
    return counts, losses


def _pooled_sums(values: np.ndarray) -> np.ndarray:
    """`values` summed over all processes."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def _pooled(counts: metrics.ErrorCounts) -> metrics.ErrorCounts:
    """Edit counts summed over all processes."""
    if jax.process_count() == 1:
        return counts
    return metrics.ErrorCounts(*(int(x) for x in _pooled_sums(np.array(
        [counts.substitutions, counts.deletions, counts.insertions, counts.reference_length]))))


def transcribe(decoders: dict, route, params, split, tokenizer, mesh,
               ) -> list[results_io.UtteranceOutput]:
    """Raw test outputs of this process's rows of `split`: reference, the `greedy` and `beam`
    decoders' hypotheses (`make_decoder`), and the branch of every encoder frame (`route`,
    `routing_report.make_router`)."""
    source, report, pipe = split
    out = []
    for batch in input_pipeline.make_dataset(source, tokenizer, report, pipe,
                                             process_index=jax.process_index(),
                                             process_count=jax.process_count()):
        device_batch = train_step.global_batch(batch, mesh)
        hyps = {}
        for name, decode in decoders.items():
            tokens, lengths = decode(params, device_batch)
            tokens, lengths = train_step.local_rows(tokens), train_step.local_rows(lengths)
            hyps[name] = (tokens, lengths)
        _, frames, routed = route(params, device_batch)
        frames = train_step.local_rows(frames)
        branches = train_step.local_rows(routed[0]) if routed is not None else None
        for r in np.flatnonzero(batch["weights"]):
            text = {name: tokenizer.decode(t[r, : n[r]]) for name, (t, n) in hyps.items()}
            route_r = (branches[r, : frames[r]] if branches is not None
                       else np.zeros(frames[r], np.int64))
            out.append(results_io.UtteranceOutput(
                id=str(batch["ids"][r]),
                reference=tokenizer.decode(batch["tokens"][r, : batch["token_lengths"][r]]),
                greedy=text["greedy"], beam=text.get("beam"), beam_lm=text.get("beam_lm"),
                branches="".join(str(int(b)) for b in route_r)))
    return out


def hardware() -> dict:
    """What a JAX run ran on (metrics.json "hardware")."""
    return {**results_io.host_description(), "framework": f"jax {jax.__version__}",
            "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
            "devices": jax.device_count(), "processes": jax.process_count()}


def write_run_results(workdir: Path, outputs: list[results_io.UtteranceOutput],
                      config: ml_collections.ConfigDict, model: Transducer,
                      train_time_s: float | None) -> None:
    """outputs.jsonl and metrics.json (`amnet.evaluation.results`). With several processes each
    writes its shard of the outputs and process 0 joins them (the run directory is shared, as for
    checkpoints)."""
    processes, process = jax.process_count(), jax.process_index()
    if processes > 1:
        results_io.write_outputs(workdir / f"outputs-{process:05d}-of-{processes:05d}.jsonl",
                                 outputs)
        _sync("test outputs written")
        if process != 0:
            return
        shards = [workdir / f"outputs-{i:05d}-of-{processes:05d}.jsonl"
                  for i in range(processes)]
        outputs = [o for shard in shards for o in results_io.read_outputs(shard)]
        for shard in shards:
            shard.unlink()
    results_io.write_outputs(workdir / results_io.OUTPUTS, outputs)
    record = scoring.run_metrics(
        outputs, run=workdir.name, framework="jax", dataset=config.data.name,
        split=config.data.test_split, model=model.config,
        latency=scoring.LatencyModel.of(model.config), config=json.loads(config.to_json()),
        train_time_s=train_time_s, hardware=hardware())
    results_io.write_metrics(workdir / results_io.METRICS, record)


def _train_time_before(workdir: Path, step: int) -> float:
    """Training seconds logged up to `step` by earlier segments of a resumed run."""
    seconds = 0.0
    log = workdir / "metrics.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("step", 0) <= step and "train_time_s" in record:
                seconds = max(seconds, float(record["train_time_s"]))
    return seconds


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False,
                       stop_after: int | None = None) -> dict:
    """The whole run; returns the final results (also written to results.json)."""
    workdir = Path(workdir)
    mesh = train_step.make_mesh(config.train.num_devices)
    devices = mesh.devices.size
    if config.train.per_device_batch_size > 0:
        config = config.copy_and_resolve_references()
        config.train.global_batch_size = config.train.per_device_batch_size * devices
    if config.train.global_batch_size % devices:
        raise ValueError(f"global batch size {config.train.global_batch_size} is not divisible "
                         f"by the {devices} devices of the mesh")
    if config.eval.batch_size % devices:
        raise ValueError(f"eval batch size {config.eval.batch_size} is not divisible by the "
                         f"{devices} devices of the mesh")
    test_decoders(config)  # a bad list fails now, not after training
    config = cmvn.resolve(config, lambda: open_dataset(config, config.data.train_split),
                          stored=workdir / "config.json" if resume else None)
    prepare_run_dir(workdir, config, resume)
    tokenizer = make_tokenizer(config)
    front, augment = frontend_configs(config)
    model = Transducer(model_config(config, tokenizer.vocab_size))
    optimizer = optim.make_optimizer(config.optimizer, config.train.steps)
    process, processes = jax.process_index(), jax.process_count()

    train_source = open_dataset(config, config.data.train_split)
    eval_split = open_eval_split(config, config.data.eval_split, tokenizer)
    train_pipe = pipeline_config(config, batch_size=config.train.global_batch_size, train=True)
    report = input_pipeline.scan(train_source, tokenizer, train_pipe)
    iterator = iter(input_pipeline.make_dataset(train_source, tokenizer, report, train_pipe,
                                                process_index=process, process_count=processes))
    state = train_step.create_train_state(model, optimizer, train_pipe.buckets[0], front,
                                          config.seed, mesh)
    meta = {"model": identity_block("model", json.loads(config.model.to_json())),
            "frontend": json.loads(config.frontend.to_json()), "vocab_size": tokenizer.vocab_size}
    checkpointer = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                              keep_best=config.train.keep_best)
    restored = checkpointer.restore_latest(state, meta) if resume else None
    if restored is not None:
        state, data_state = restored
        iterator.set_state(data_state)
    elif config.get("init") and config.init.dense_run:
        state = warm_started(state, config, model, mesh)
    loss_fn, constrain = make_objective(config, model)
    step_fn = train_step.make_train_step(model, optimizer, mesh, front, augment, loss_fn,
                                         constrain, normalization=build.loss_normalization(config))
    decode_greedy = train_step.make_decoder(model, front, beam=0,
                                            max_length=config.eval.max_length,
                                            max_symbols_per_frame=config.eval.max_symbols_per_frame)
    validators = {"wer_greedy": decode_greedy}
    if model.config.ctc_head:
        validators["wer_ctc_greedy"] = train_step.make_ctc_decoder(model, front)
    probe = train_step.make_probe(model, front)
    writer = MetricWriter(workdir, enabled=process == 0)
    start = int(state.step)
    last_end = min(config.train.steps, stop_after) if stop_after else config.train.steps
    bar = tqdm.tqdm(total=config.train.steps, initial=start, desc="train", unit="step",
                    disable=process != 0, dynamic_ncols=True)
    window = {"utterances": 0.0, "audio_seconds": 0.0, "time": time.perf_counter()}
    nonfinite = {"total": 0, "run": 0}
    # Wall clock of the training loop (steps, validation, checkpoints), over resumed segments.
    train_time = {"start": time.perf_counter(),
                  "before": _train_time_before(workdir, start) if restored is not None else 0.0}
    preempted = None
    with Preemption() as preemption:
        for step in range(start + 1, last_end + 1):
            batch = next(iterator)
            state, step_metrics = step_fn(state, train_step.global_batch(batch, mesh))
            if int(step_metrics["nonfinite"]):
                nonfinite["total"] += 1
                nonfinite["run"] += 1
                logging.warning("step %d: non-finite loss or gradient, update skipped (%d in a "
                                "row)", step, nonfinite["run"])
                if nonfinite["run"] > config.train.max_nonfinite_steps:
                    checkpointer.wait()
                    kept = checkpointer.latest_step()
                    checkpointer.close()
                    raise NonFiniteError(
                        f"{nonfinite['run']} consecutive steps up to {step} had a non-finite "
                        f"loss or gradient (max_nonfinite_steps="
                        f"{config.train.max_nonfinite_steps}); every one was skipped, and the "
                        f"last checkpoint (step {kept}) holds the last good params")
            else:
                nonfinite["run"] = 0
            window["utterances"] += float(step_metrics["utterances"])
            window["audio_seconds"] += float(step_metrics["audio_seconds"])
            bar.update()
            if step % config.train.log_every == 0 or step == last_end:
                elapsed = time.perf_counter() - window["time"]
                scalars = {"loss": step_metrics["loss"], "grad_norm": step_metrics["grad_norm"],
                           "learning_rate": optim.learning_rate_schedule(config.optimizer,
                                                                         config.train.steps)(step),
                           "utterances_per_s": window["utterances"] / elapsed,
                           "audio_seconds_per_s": window["audio_seconds"] / elapsed,
                           "nonfinite_steps": nonfinite["total"],
                           "train_time_s": train_time["before"] + time.perf_counter()
                           - train_time["start"]}
                scalars.update({k: v for k, v in step_metrics.items() if k.startswith("train/")})
                writer.write(step, scalars)
                bar.set_postfix(loss=f"{float(step_metrics['loss']):.3f}",
                                utt_s=f"{scalars['utterances_per_s']:.1f}")
                window = {"utterances": 0.0, "audio_seconds": 0.0, "time": time.perf_counter()}
            wer = None
            if step % config.train.eval_every == 0 or step == config.train.steps:
                counts, losses = validate(validators, probe, state.params, eval_split,
                                          tokenizer, mesh, max_batches=config.train.eval_batches)
                wer = counts["wer_greedy"].rate
                writer.write(step, {**{f"eval/{k}": c.rate for k, c in counts.items()},
                                    **{f"eval/{k}": v for k, v in losses.items()}})
                if process == 0:
                    ctc_wer = (f", CTC greedy {counts['wer_ctc_greedy'].rate:.2%}"
                               if "wer_ctc_greedy" in counts else "")
                    bar.write(f"step {step}: validation greedy WER {wer:.2%}{ctc_wer}; loss "
                              f"{losses['loss_per_token']:.3f} nats/token, "
                              f"{losses['probe_loss_per_token']:.3f} with the encoder output "
                              f"replaced by its mean, {losses['swap_loss_per_token']:.3f} by "
                              "another utterance's")
            saved = step % config.train.checkpoint_every == 0 or step == last_end or \
                wer is not None
            if saved:
                checkpointer.save(step, state, iterator.get_state(), meta, wer=wer)
            if _agreed(preemption.signal_name is not None):
                if not saved:
                    checkpointer.save(step, state, iterator.get_state(), meta)
                preempted = preemption.signal_name or "a signal to another process"
                logging.warning("%s: checkpoint saved at step %d; continue with --resume",
                                preempted, step)
                break
    bar.close()
    train_time["total"] = train_time["before"] + time.perf_counter() - train_time["start"]
    checkpointer.wait()
    results = {"step": int(state.step)}
    if preempted:
        results["preempted"] = preempted
    elif int(state.step) == config.train.steps:
        test_split = open_eval_split(config, config.data.test_split, tokenizer)
        wanted = test_decoders(config)
        decoders = {"greedy": decode_greedy}
        if "beam" in wanted:
            decoders["beam"] = train_step.make_decoder(
                model, front, beam=config.eval.beam, max_length=config.eval.max_length,
                max_symbols_per_frame=config.eval.max_symbols_per_frame)
        if "beam_lm" in wanted:
            fusion = decoding.Fusion.of(*run_lm(config, workdir, tokenizer, train_source))
            decoders["beam_lm"] = train_step.make_decoder(
                model, front, beam=config.lm.beam, max_length=config.eval.max_length,
                max_symbols_per_frame=config.eval.max_symbols_per_frame, fusion=fusion)
        outputs = transcribe(decoders, routing_report.make_router(model, front), state.params,
                             test_split, tokenizer, mesh)
        if model.config.ctc_head:
            results["test_wer_ctc_greedy"] = evaluate(
                validators["wer_ctc_greedy"], state.params, test_split, tokenizer, mesh).rate
        refs = [o.reference for o in outputs]
        for name in decoders:
            counts = _pooled(metrics.word_errors(refs, [getattr(o, name) for o in outputs]))
            results[f"test_wer_{name}"] = counts.rate
            results[f"test_words_{name}"] = counts.reference_length
        writer.write(int(state.step), {f"test/wer_{k}": results[f"test_wer_{k}"]
                                       for k in decoders})
        write_run_results(workdir, outputs, config, model, train_time["total"])
        if process == 0:
            (workdir / "results.json").write_text(json.dumps(results, indent=2))
    writer.close()
    checkpointer.close()
    return results


