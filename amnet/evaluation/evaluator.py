"""Decoding over a split, the one loop every evaluation uses: word errors (validation, test),
raw test outputs in the shared results schema, and a run's outputs.jsonl and metrics.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jax
import ml_collections
import numpy as np

from amnet.data import input_pipeline
from amnet.evaluation import metrics, scoring
from amnet.evaluation import results as results_io
from amnet.rnnt.transducer import Transducer
from amnet.training import parallel

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


def batches(split, tokenizer, mesh) -> Iterator[tuple[dict, dict]]:
    """(this process's rows, the global batch on `mesh`) of every batch of `split` (from
    `amnet.data.datasets.open_eval_split`), in order: the one pass every evaluation makes."""
    source, report, pipe = split
    for batch in input_pipeline.make_dataset(source, tokenizer, report, pipe,
                                             process_index=jax.process_index(),
                                             process_count=jax.process_count()):
        yield batch, parallel.global_batch(batch, mesh)


def evaluate(decode, params, split, tokenizer, mesh, *, max_batches: int = -1,
             ) -> metrics.ErrorCounts:
    """Word errors of `decode` on `split` (from `open_eval_split`): this process's rows, pooled
    over processes."""
    return validate({"wer": decode}, None, params, split, tokenizer, mesh,
                    max_batches=max_batches)[0]["wer"]


def validate(decoders: dict, probe, params, split, tokenizer, mesh, *, max_batches: int = -1,
             ) -> tuple[dict[str, metrics.ErrorCounts], dict[str, float]]:
    """One pass over `split`: word errors of each decoder {name: decode} and, with `probe`
    (`decode_fns.make_probe`), the transducer's loss per token as is, with the encoder output
    replaced by its mean, and with another utterance's (`loss_per_token`,
    `probe_loss_per_token`, `swap_loss_per_token`). Counts are pooled over processes."""
    counts = {name: metrics.ErrorCounts() for name in decoders}
    sums = np.zeros(4)  # loss, mean-probe loss, swap-probe loss, tokens
    for i, (batch, device_batch) in enumerate(batches(split, tokenizer, mesh)):
        if i == max_batches:
            break
        rows = np.flatnonzero(batch["weights"])
        refs = [tokenizer.decode(batch["tokens"][r, : batch["token_lengths"][r]]) for r in rows]
        for name, decode in decoders.items():
            tokens, lengths = decode(params, device_batch)
            tokens, lengths = parallel.local_rows(tokens), parallel.local_rows(lengths)
            hyps = [tokenizer.decode(tokens[r, : lengths[r]]) for r in rows]
            counts[name] = counts[name] + metrics.word_errors(refs, hyps)
        if probe is not None:
            plain, mean, swap = (parallel.local_rows(x) for x in probe(params, device_batch))
            sums += [plain[rows].sum(), mean[rows].sum(), swap[rows].sum(),
                     batch["token_lengths"][rows].sum()]
    counts = {name: pooled(c) for name, c in counts.items()}
    losses = {}
    if probe is not None:
        sums = parallel.pooled_sums(sums)
        losses = {"loss_per_token": sums[0] / sums[3], "probe_loss_per_token": sums[1] / sums[3],
                  "swap_loss_per_token": sums[2] / sums[3]}
    return counts, losses


def pooled(counts: metrics.ErrorCounts) -> metrics.ErrorCounts:
    """Edit counts summed over all processes."""
    if jax.process_count() == 1:
        return counts
    return metrics.ErrorCounts(*(int(x) for x in parallel.pooled_sums(np.array(
        [counts.substitutions, counts.deletions, counts.insertions, counts.reference_length]))))


def transcribe(decoders: dict, route, params, split, tokenizer, mesh,
               ) -> list[results_io.UtteranceOutput]:
    """Raw test outputs of this process's rows of `split`: reference, the `greedy` and `beam`
    decoders' hypotheses (`make_decoder`), and the branch of every encoder frame (`route`,
    `routing.make_router`)."""
    out = []
    for batch, device_batch in batches(split, tokenizer, mesh):
        hyps = {}
        for name, decode in decoders.items():
            tokens, lengths = decode(params, device_batch)
            tokens, lengths = parallel.local_rows(tokens), parallel.local_rows(lengths)
            hyps[name] = (tokens, lengths)
        _, frames, routed = route(params, device_batch)
        frames = parallel.local_rows(frames)
        branches = parallel.local_rows(routed[0]) if routed is not None else None
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
        parallel.sync("test outputs written")
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
