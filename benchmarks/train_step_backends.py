r"""The RNN-T train step, plain and as a neural diff, on each JAX backend, side by side.

    python -m benchmarks.train_step_backends                       # CPU only
    python -m benchmarks.train_step_backends --backends=gpu,cpu --cpu_kinds=dense

Kinds: `dense` (every parameter trained), `sparse` (a sparse diff `W + M ⊙ D` over the frozen
model), `hashed` (a hashed diff `W + ξ ⊙ h[bucket]`, 10% of the entries as buckets). One
synthetic batch of the `--preset`'s first length bucket (noise audio at full length, random
transcripts at full length) is fed to every step; per kind and backend it prints the compile
time, the median step time of `--steps` steps, utterances/s, and the first step's loss against
the CPU's (same parameters, batch and keys). All in one process, so ratios are comparable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

from amnet import build
from amnet.data.text import CharTokenizer
from amnet.rnnt import cmvn, objective
from amnet.training import parallel
from amnet.training import step as train_step
from benchmarks import models
from experiments.configs import baseline
from neuraldiff import hashed, sparse, tree

_PRESET = flags.DEFINE_string("preset", "small", "Preset of experiments/configs/baseline.py.")
_BATCH = flags.DEFINE_integer("batch", 32, "Utterances per step.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per kind and backend.")
_BACKENDS = flags.DEFINE_list("backends", ["cpu"], "JAX backends to run on (cpu, gpu, tpu).")
_KINDS = flags.DEFINE_list("kinds", ["dense", "sparse", "hashed"], "Step kinds.")
_CPU_KINDS = flags.DEFINE_list("cpu_kinds", None, "Kinds on the CPU backend (default: --kinds).")
_LOSS_CHUNK = flags.DEFINE_integer("loss_frames_per_chunk", None,
                                   "Override the preset's fused-loss chunk (1 on CPU, 5-10 on "
                                   "accelerators; docs/rnnt.md).")


def _state(kind: str, model, optimizer, config, front, mesh) -> train_step.TrainState:
    state = train_step.create_train_state(model, optimizer, tuple(config.data.buckets[0]), front,
                                          config.seed, mesh)
    if kind == "dense":
        return state
    params = state.params
    if kind == "sparse":
        variables = sparse.init(params)
        frozen = {"params": params, "mask": variables["diff_mask"]}
    else:
        sizes = {n: int(np.prod(v.shape)) for n, v in tree.flatten(params).items()
                 if n in tree.Selector().names(params)}
        buckets = hashed.allocate_buckets(sizes, sum(sizes.values()) // 10)
        variables = hashed.init(params, buckets)
        frozen = {"params": params, "seeds": variables["diff_hash"]}
    return train_step.new_state(variables["diff"], optimizer, state.rng, mesh, frozen)


MERGES = {"dense": None,
          "sparse": lambda f, d: sparse.merge(f["params"], d, f["mask"]),
          "hashed": lambda f, h: hashed.merge(f["params"], h, f["seeds"])}


def measure(kind: str, backend: str, config, batch: dict) -> dict:
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices(backend)[:1])
    tokenizer = CharTokenizer()
    front, augment = build.frontend_configs(config)
    model = build.model(config, tokenizer.vocab_size)
    optimizer = build.optimizer(config)
    step = train_step.make_train_step(model, optimizer, mesh, front, augment,
                                      objective.rnnt_objective(model, config.get("loss")),
                                      merge=MERGES[kind],
                                      normalization=build.loss_normalization(config))
    state = _state(kind, model, optimizer, config, front, mesh)
    device_batch = parallel.global_batch(batch, mesh)
    start = time.perf_counter()
    state, metrics = step(state, device_batch)
    first_loss = float(metrics["loss"])
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(_STEPS.value):
        start = time.perf_counter()
        state, metrics = step(state, device_batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"kind": kind, "backend": backend, "device": str(jax.devices(backend)[0]),
            "compile_s": compile_s, "step_s": median, "utt_s": batch["weights"].size / median,
            "first_loss": first_loss, "last_loss": float(metrics["loss"])}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = cmvn.unit_stats(baseline.get_config(_PRESET.value))
    if _LOSS_CHUNK.value:
        config.model.loss_frames_per_chunk = _LOSS_CHUNK.value
    batch = models.synthetic_batch(config.data.buckets[0], _BATCH.value, models.CHARACTERS,
                                   labels=config.data.buckets[0][1] // 2)
    rows = []
    for backend in _BACKENDS.value:
        kinds = _CPU_KINDS.value if backend == "cpu" and _CPU_KINDS.value else _KINDS.value
        for kind in kinds:
            rows.append(measure(kind, backend, config, batch))
            r = rows[-1]
            print(f"{r['kind']:>6} on {r['device']}: compile+first step {r['compile_s']:.1f} s, "
                  f"step {1000 * r['step_s']:.1f} ms ({r['utt_s']:.0f} utt/s), loss "
                  f"{r['first_loss']:.4f} -> {r['last_loss']:.4f}", flush=True)
    print(f"\n{_PRESET.value} preset, batch {_BATCH.value}, loss chunk "
          f"{config.model.loss_frames_per_chunk}, jax {jax.__version__}")
    print("| kind | backend | step ms | utt/s | vs cpu (same kind) | first loss rel. diff vs cpu |")
    print("|---|---|---:|---:|---:|---:|")
    cpu = {r["kind"]: r for r in rows if r["backend"] == "cpu"}
    for r in rows:
        ref = cpu.get(r["kind"])
        speed = f"{ref['step_s'] / r['step_s']:.1f}x" if ref else "-"
        gap = (f"{abs(r['first_loss'] - ref['first_loss']) / abs(ref['first_loss']):.1e}"
               if ref else "-")
        print(f"| {r['kind']} | {r['backend']} | {1000 * r['step_s']:.1f} | {r['utt_s']:.0f} | "
              f"{speed} | {gap} |")


if __name__ == "__main__":
    app.run(main)
