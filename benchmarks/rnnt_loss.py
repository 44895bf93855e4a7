r"""RNN-T loss + gradient: materialized (naive) vs fused vs pruned, memory and time side by side.

    python -m benchmarks.rnnt_loss                      # B=8, T=250, U=60, V=1024, H=320
    python -m benchmarks.rnnt_loss --chunks=1,5,10 --repeats=3
    python -m benchmarks.rnnt_loss --prune_ranges=5 --vocab=4096   # LibriSpeech-size V

The pruned variants (`amnet.rnnt.pruned_loss`) include their simple joint (loss and gradient):
the whole cost of the method, with the simple joint's `[V]` logits as extra inputs.

Memory is XLA's compile-time temporary allocation for the jitted loss-and-gradient
(`compiled.memory_analysis().temp_size_in_bytes`); time is the median wall clock of
`--repeats` runs after one warm-up, all in this process, so the ratios are comparable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import app, flags

from amnet.rnnt import loss as rnnt
from amnet.rnnt import pruned_loss as rnnt_pruned

_BATCH = flags.DEFINE_integer("batch", 8, "B")
_FRAMES = flags.DEFINE_integer("frames", 250, "T")
_LABELS = flags.DEFINE_integer("labels", 60, "U")
_VOCAB = flags.DEFINE_integer("vocab", 1024, "V")
_HIDDEN = flags.DEFINE_integer("hidden", 320, "H (joint width)")
_CHUNKS = flags.DEFINE_list("chunks", ["1", "10"], "Frames per chunk of the fused loss.")
_PRUNE = flags.DEFINE_list("prune_ranges", ["5"], "Tokens per frame of the pruned loss.")
_NAIVE = flags.DEFINE_bool("naive", True, "Include the materialized reference (the ratios' "
                           "base; without it, the first fused variant is).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per variant.")

MIB = 1 << 20


def _inputs(batch, frames, labels, vocab, hidden):
    keys = jax.random.split(jax.random.key(0), 5)
    joint = (jax.random.normal(keys[0], (batch, frames, hidden)),
             jax.random.normal(keys[1], (batch, labels + 1, hidden)),
             jax.random.normal(keys[2], (hidden, vocab)) * hidden**-0.5,
             jnp.zeros((vocab,)))
    targets = jax.random.randint(keys[3], (batch, labels), 1, vocab)
    lengths = jnp.full((batch,), frames)
    target_lengths = jnp.full((batch,), labels)
    return joint, lengths, targets, target_lengths


def _measure(fn, args, repeats):
    compiled = jax.jit(fn).lower(*args).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return temp, statistics.median(times)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    joint, lengths, targets, target_lengths = _inputs(
        _BATCH.value, _FRAMES.value, _LABELS.value, _VOCAB.value, _HIDDEN.value)

    keys = jax.random.split(jax.random.key(1), 2)
    simple = (jax.random.normal(keys[0], (_BATCH.value, _FRAMES.value, _VOCAB.value)),
              jax.random.normal(keys[1], (_BATCH.value, _LABELS.value + 1, _VOCAB.value)))

    def naive(*joint_args):
        logits = rnnt.joint_logits(*joint_args[:4])
        return rnnt.rnnt_loss(logits, lengths, targets, target_lengths).sum()

    variants = {"naive (materialized logits)": naive} if _NAIVE.value else {}
    for chunk in (int(c) for c in _CHUNKS.value):
        variants[f"fused, {chunk} frame(s)/chunk"] = (
            lambda *a, c=chunk: rnnt.rnnt_loss_fused(*a[:4], lengths, targets, target_lengths,
                                                     frames_per_chunk=c).sum())
    for s_range in (int(r) for r in _PRUNE.value):
        variants[f"pruned, {s_range} tokens/frame (+ simple joint)"] = (
            lambda *a, r=s_range: sum(x.sum() for x in rnnt_pruned.rnnt_loss_pruned(
                *a, lengths, targets, target_lengths, s_range=r)[:2]))
    print(f"B={_BATCH.value} T={_FRAMES.value} U={_LABELS.value} V={_VOCAB.value} "
          f"H={_HIDDEN.value}, loss + grad w.r.t. encoder/prediction outputs and joint params, "
          f"{jax.devices()[0].platform}")
    base = next(iter(variants)).split(" (")[0].split(",")[0]
    print(f"| variant | temp memory (MiB) | time (s) | memory vs {base} | time vs {base} |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for name, fn in variants.items():
        grad_fn = jax.value_and_grad(fn, argnums=tuple(range(6)))
        results[name] = _measure(grad_fn, (*joint, *simple), _REPEATS.value)
        base_mem, base_time = next(iter(results.values()))
        mem, seconds = results[name]
        print(f"| {name} | {mem / MIB:.1f} | {seconds:.3f} | {mem / base_mem:.3f}x | "
              f"{seconds / base_time:.2f}x |", flush=True)


if __name__ == "__main__":
    app.run(main)
