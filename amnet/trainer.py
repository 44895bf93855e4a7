"""The training loop: data, model, data-parallel steps, evaluation, checkpoints, metrics.

`train_and_evaluate(config, workdir)` is the whole run; `experiments/train.py` is its absl
entry point. The run directory receives config.json (the resolved config), metrics.jsonl,
tensorboard/, checkpoints/{latest,best}/, results.json (final test WER, greedy and beam), and
the run's results in the shared schema (`amnet.evaluation.results`): outputs.jsonl and
metrics.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import ml_collections
import tqdm
from absl import logging

from amnet import build
from amnet.amortized import warm_start
from amnet.build import frontend_configs
from amnet.data import datasets, input_pipeline
from amnet.evaluation import decode_fns, evaluator, metrics, routing, shallow_fusion
from amnet.rnnt import cmvn, decoding
from amnet.rnnt.transducer import Transducer
from amnet.training import checkpointing, loop, optim, parallel, rundir
from amnet.training import step as train_step
from amnet.training.metric_writers import MetricWriter

NonFiniteError = loop.NonFiniteError


def warm_started(state: train_step.TrainState, config: ml_collections.ConfigDict,
                 model: Transducer, mesh) -> train_step.TrainState:
    """`state` with params from the dense run `config.init.dense_run`
    (`amnet.amortized.warm_start`)."""
    dense, meta = checkpointing.load_params(config.init.dense_run)
    logging.info("warm start from %s", config.init.dense_run)
    params = warm_start.from_dense(jax.device_get(state.params), dense,
                                   model.config.encoder_branches)
    return state.replace(params=parallel.replicated(mesh, params))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False,
                       stop_after: int | None = None) -> dict:
    """The whole run; returns the final results (also written to results.json)."""
    workdir = Path(workdir)
    mesh = parallel.make_mesh(config.train.num_devices)
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
    evaluator.test_decoders(config)  # a bad list fails now, not after training
    config = cmvn.resolve(config, lambda: datasets.open_dataset(config, config.data.train_split),
                          stored=workdir / "config.json" if resume else None)
    rundir.prepare_run_dir(workdir, config, resume)
    tokenizer = build.tokenizer(config)
    front, augment = frontend_configs(config)
    model = build.model(config, tokenizer.vocab_size)
    optimizer = build.optimizer(config)
    process, processes = jax.process_index(), jax.process_count()

    train_source = datasets.open_dataset(config, config.data.train_split)
    eval_split = datasets.open_eval_split(config, config.data.eval_split, tokenizer)
    train_pipe = datasets.pipeline_config(config, batch_size=config.train.global_batch_size,
                                          train=True)
    report = input_pipeline.scan(train_source, tokenizer, train_pipe)
    iterator = iter(input_pipeline.make_dataset(train_source, tokenizer, report, train_pipe,
                                                process_index=process, process_count=processes))
    state = train_step.create_train_state(model, optimizer, train_pipe.buckets[0], front,
                                          config.seed, mesh)
    meta = {"model": rundir.identity_block("model", json.loads(config.model.to_json())),
            "frontend": json.loads(config.frontend.to_json()), "vocab_size": tokenizer.vocab_size}
    checkpointer = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                              keep_best=config.train.keep_best)
    restored = checkpointer.restore_latest(state, meta) if resume else None
    if restored is not None:
        state, data_state = restored
        iterator.set_state(data_state)
    elif config.get("init") and config.init.dense_run:
        state = warm_started(state, config, model, mesh)
    loss_fn, constrain = build.objective(config, model)
    step_fn = train_step.make_train_step(model, optimizer, mesh, front, augment, loss_fn,
                                         constrain, normalization=build.loss_normalization(config))
    decode_greedy = decode_fns.make_decoder(model, front, beam=0,
                                            max_length=config.eval.max_length,
                                            max_symbols_per_frame=config.eval.max_symbols_per_frame)
    validators = {"wer_greedy": decode_greedy}
    if model.config.ctc_head:
        validators["wer_ctc_greedy"] = decode_fns.make_ctc_decoder(model, front)
    probe = decode_fns.make_probe(model, front)
    writer = MetricWriter(workdir, enabled=process == 0)
    start = int(state.step)
    last_end = min(config.train.steps, stop_after) if stop_after else config.train.steps
    bar = tqdm.tqdm(total=config.train.steps, initial=start, desc="train", unit="step",
                    disable=process != 0, dynamic_ncols=True)
    window = {"utterances": 0.0, "audio_seconds": 0.0, "time": time.perf_counter()}
    # Wall clock of the training loop (steps, validation, checkpoints), over resumed segments.
    train_time = {"start": time.perf_counter(),
                  "before": (rundir.train_time_before(workdir, start) if restored is not None
                             else 0.0)}
    saved = {"step": None}
    schedule = optim.learning_rate_schedule(config.optimizer, config.train.steps)

    def log(step, state, step_metrics):
        window["utterances"] += float(step_metrics["utterances"])
        window["audio_seconds"] += float(step_metrics["audio_seconds"])
        bar.update()
        if step % config.train.log_every and step != last_end:
            return
        elapsed = time.perf_counter() - window["time"]
        scalars = {"loss": step_metrics["loss"], "grad_norm": step_metrics["grad_norm"],
                   "learning_rate": schedule(step),
                   "utterances_per_s": window["utterances"] / elapsed,
                   "audio_seconds_per_s": window["audio_seconds"] / elapsed,
                   "nonfinite_steps": step_metrics["nonfinite_steps"],
                   "train_time_s": train_time["before"] + time.perf_counter()
                   - train_time["start"]}
        scalars.update({k: v for k, v in step_metrics.items() if k.startswith("train/")})
        writer.write(step, scalars)
        bar.set_postfix(loss=f"{float(step_metrics['loss']):.3f}",
                        utt_s=f"{scalars['utterances_per_s']:.1f}")
        window.update(utterances=0.0, audio_seconds=0.0, time=time.perf_counter())

    def validate_and_save(step, state, step_metrics):
        wer = None
        if step % config.train.eval_every == 0 or step == config.train.steps:
            counts, losses = evaluator.validate(validators, probe, state.params, eval_split,
                                                tokenizer, mesh,
                                                max_batches=config.train.eval_batches)
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
        if step % config.train.checkpoint_every == 0 or step == last_end or wer is not None:
            checkpointer.save(step, state, iterator.get_state(), meta, wer=wer)
            saved["step"] = step

    def last_good_checkpoint() -> str:
        checkpointer.wait()
        kept = checkpointer.latest_step()
        checkpointer.close()
        return f", and the last checkpoint (step {kept}) holds the last good params"

    def save_before_stopping(step, state):
        if saved["step"] != step:
            checkpointer.save(step, state, iterator.get_state(), meta)

    state, preempted = loop.fit(
        step_fn, state, iterator, loop.global_batches(mesh), range(start + 1, last_end + 1),
        max_nonfinite_steps=config.train.max_nonfinite_steps, hooks=(log, validate_and_save),
        on_nonfinite_stop=last_good_checkpoint, on_preempt=save_before_stopping)
    if preempted:
        logging.warning("%s: checkpoint saved at step %d; continue with --resume", preempted,
                        int(state.step))
    bar.close()
    train_time["total"] = train_time["before"] + time.perf_counter() - train_time["start"]
    checkpointer.wait()
    results = {"step": int(state.step)}
    if preempted:
        results["preempted"] = preempted
    elif int(state.step) == config.train.steps:
        test_split = datasets.open_eval_split(config, config.data.test_split, tokenizer)
        wanted = evaluator.test_decoders(config)
        decoders = {"greedy": decode_greedy}
        if "beam" in wanted:
            decoders["beam"] = decode_fns.make_decoder(
                model, front, beam=config.eval.beam, max_length=config.eval.max_length,
                max_symbols_per_frame=config.eval.max_symbols_per_frame)
        if "beam_lm" in wanted:
            fusion = decoding.Fusion.of(*shallow_fusion.run_lm(config, workdir, tokenizer,
                                                                train_source))
            decoders["beam_lm"] = decode_fns.make_decoder(
                model, front, beam=config.lm.beam, max_length=config.eval.max_length,
                max_symbols_per_frame=config.eval.max_symbols_per_frame, fusion=fusion)
        outputs = evaluator.transcribe(decoders, routing.make_router(model, front),
                                       state.params, test_split, tokenizer, mesh)
        if model.config.ctc_head:
            results["test_wer_ctc_greedy"] = evaluator.evaluate(
                validators["wer_ctc_greedy"], state.params, test_split, tokenizer, mesh).rate
        refs = [o.reference for o in outputs]
        for name in decoders:
            counts = evaluator.pooled(metrics.word_errors(refs,
                                                         [getattr(o, name) for o in outputs]))
            results[f"test_wer_{name}"] = counts.rate
            results[f"test_words_{name}"] = counts.reference_length
        writer.write(int(state.step), {f"test/wer_{k}": results[f"test_wer_{k}"]
                                       for k in decoders})
        if process == 0:
            (workdir / rundir.RESULTS).write_text(json.dumps(results, indent=2))
        # metrics.json last: it marks the run finished (`rundir.status`).
        evaluator.write_run_results(workdir, outputs, config, model, train_time["total"])
    writer.close()
    checkpointer.close()
    return results


def train_or_reuse(config: ml_collections.ConfigDict, workdir: str | Path, name: str = "run",
                   ) -> dict:
    """The results of the run in `workdir`: read when it is finished, otherwise trained (resumed
    when unfinished), with one line saying which."""
    workdir = Path(workdir)
    state = rundir.status(workdir)
    if state == "finished":
        print(f"{name}: reusing the finished run in {workdir} (remove it to train again)")
        return json.loads((workdir / rundir.RESULTS).read_text())
    branches = list(config.model.get("encoder_branches", ("dense",)))
    print(f"{name}: {'resuming' if state == 'unfinished' else 'training'} {branches} for "
          f"{config.train.steps} steps of {config.train.global_batch_size} utterances in "
          f"{workdir}")
    return train_and_evaluate(config, str(workdir), resume=state == "unfinished")


