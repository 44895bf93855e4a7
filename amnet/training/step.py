"""Train and eval steps, data parallel over a `('data',)` device mesh.

The train step is `jit(shard_map(per_device_step))`: each device featurizes and runs the model
on its rows of the global batch, and gradients are averaged with `pmean` (pmap's semantics on
JAX's supported API). The loss is the weighted sum of per-utterance costs over the global batch
divided by its target tokens (`normalization="token"`: nats per token, so that gradient norms
and clipping do not scale with utterance length) or by its utterances ("utterance"); either
way the update does not depend on how rows are spread over devices. SpecAugment draws one key
per global row for the same reason.

Batches: dicts of process-local rows from `amnet.data.input_pipeline` (audio `[b, S]`,
audio_lengths `[b]`, tokens `[b, U]`, token_lengths `[b]`, weights `[b]`); `global_batch`
assembles the process-local rows of all processes into arrays sharded over the mesh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from amnet.rnnt import frontend
from amnet.rnnt.objective import Objective, rnnt_objective
from amnet.rnnt.transducer import Transducer
from amnet.training import parallel

Params = Any

ROUTING_STREAM = 0x7FFF_FFFF  # key stream of the routing noise, apart from per-step keys


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key data; step keys are fold_in(rng, step)
    # Inputs of the model that are not trained (a frozen base model and the structure of a
    # neural diff); the model sees `merge(frozen, params)` (see `make_train_step`).
    frozen: Any = None


def create_train_state(model: Transducer, optimizer: optax.GradientTransformation,
                       bucket: tuple[int, int], frontend_config: frontend.FrontendConfig,
                       seed: int, mesh: Mesh) -> TrainState:
    """Initializes parameters (shapes from one `(samples, tokens)` bucket), replicated."""
    key = jax.random.key(seed)
    samples, tokens = bucket
    frames = int(frontend.num_frames(samples, frontend_config)) // frontend_config.stack
    features = jnp.zeros((1, frames, frontend_config.num_mels * frontend_config.stack))
    init = lambda k: model.init(k, features, jnp.full((1,), frames),  # noqa: E731
                                jnp.ones((1, tokens), jnp.int32),
                                jnp.full((1,), tokens))["params"]
    params = jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(
        jax.random.fold_in(key, 0))
    return new_state(params, optimizer, jax.random.key_data(jax.random.fold_in(key, 1)), mesh)


def new_state(params: Any, optimizer: optax.GradientTransformation, rng: jax.Array, mesh: Mesh,
              frozen: Any = None) -> TrainState:
    """Step 0 of training `params` (the full model, or a neural diff with the base model and
    the diff's structure in `frozen`), replicated over `mesh`; `rng`: raw key data."""
    params = parallel.replicated(mesh, params)
    opt_state = jax.jit(optimizer.init, out_shardings=parallel.replicated_sharding(mesh))(params)
    return parallel.replicated(mesh, TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                                opt_state=opt_state, rng=rng, frozen=frozen))


def _augment(rng: jax.Array, features: jax.Array, lengths: jax.Array, rows: jax.Array,
             config: frontend.SpecAugmentConfig) -> jax.Array:
    """SpecAugment with one key per global row (independent of the device layout)."""
    keys = jax.vmap(lambda r: jax.random.fold_in(rng, r))(rows)
    return jax.vmap(lambda k, f, n: frontend.spec_augment(k, f[None], n[None], config)[0])(
        keys, features, lengths)


def train_features(batch: dict, rows: jax.Array, key: jax.Array,
                   frontend_config: frontend.FrontendConfig,
                   augment: frontend.SpecAugmentConfig | None) -> tuple[jax.Array, jax.Array]:
    """What the model trains on: log-mels of `batch["audio"]` `[B, S]`, SpecAugment-ed per row
    (`rows` `[B]`: global row numbers, so masks do not depend on the device layout), stacked ->
    features `[B, T, D]`, lengths `[B]`. Also the PyTorch baselines' features."""
    features, lengths = frontend.log_mel(batch["audio"], batch["audio_lengths"], frontend_config)
    if augment is not None:
        features = _augment(key, features, lengths, rows, augment)
    return frontend.stack_frames(features, lengths, frontend_config.stack)


def make_train_step(model: Transducer, optimizer: optax.GradientTransformation, mesh: Mesh,
                    frontend_config: frontend.FrontendConfig,
                    augment: frontend.SpecAugmentConfig | None,
                    objective: Objective | None = None,
                    constrain: Callable[[Params, Params, jax.Array], Params] | None = None,
                    merge: Callable[[Any, Params], Params] | None = None,
                    normalization: str = "utterance",
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Returns `train_step(state, global_batch) -> (state, metrics)`, jitted, state donated.

    objective: `amnet.rnnt.objective.Objective` signature; default plain RNN-T. Its
      per-utterance metrics are reported as weighted means over the global batch.
    constrain: `constrain(new_params, old_params, step)` applied after the update (pruning).
    merge: when given, the model runs on `merge(state.frozen, state.params)` and only
      `state.params` is trained (a neural diff over a frozen base model).
    normalization: "token" or "utterance", what the summed loss is divided by. The metrics
      `train/*` are per-utterance means either way.
    """
    objective = objective or rnnt_objective(model)
    if normalization not in ("token", "utterance"):
        raise ValueError(f"loss normalization must be 'token' or 'utterance', got "
                         f"{normalization!r}")

    def per_device(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        local_rows_count = batch["weights"].shape[0]
        rows = jax.lax.axis_index("data") * local_rows_count + jnp.arange(local_rows_count)
        base_key = jax.random.wrap_key_data(state.rng)
        step_key = jax.random.fold_in(base_key, state.step)
        routing_key = jax.random.fold_in(jax.random.fold_in(base_key, ROUTING_STREAM), state.step)

        def loss_sum(params):
            if merge is not None:
                params = merge(state.frozen, params)
            features, lengths = train_features(batch, rows, step_key, frontend_config, augment)
            losses, extra = objective(params, features, lengths, batch, rows, routing_key,
                                      state.step)
            weights = batch["weights"]
            return jnp.sum(losses * weights), {k: jnp.sum(v * weights) for k, v in extra.items()}

        (local_loss, extra), grads = jax.value_and_grad(loss_sum, has_aux=True)(state.params)
        total_weight = jax.lax.psum(jnp.sum(batch["weights"]), "data")
        per_row = batch["token_lengths"] if normalization == "token" else 1.0
        normalizer = jnp.maximum(jax.lax.psum(jnp.sum(batch["weights"] * per_row), "data"),
                                 1e-6)
        devices = jax.lax.psum(1, "data")
        grads = jax.lax.pmean(jax.tree.map(lambda g: g * (devices / normalizer), grads), "data")
        loss = jax.lax.psum(local_loss, "data") / normalizer
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if constrain is not None:
            params = constrain(params, state.params, state.step + 1)
        # A non-finite loss or gradient skips the update: params and optimizer state stay as
        # they were (the batch is still consumed), and `nonfinite` counts it.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(  # noqa: E731
            lambda n, o: jnp.where(finite, n, o), new, old)
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        samples = jnp.sum(batch["audio_lengths"] * batch["weights"])
        metrics = {
            "loss": loss,
            "nonfinite": 1 - finite.astype(jnp.int32),
            "grad_norm": grad_norm,
            "utterances": total_weight,
            "audio_seconds": jax.lax.psum(samples, "data") / frontend_config.sample_rate,
        }
        metrics.update({f"train/{k}": jax.lax.psum(v, "data") / total_weight
                        for k, v in extra.items()})
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    # check_vma=False: the model's zero initial LSTM carries are device-invariant while the
    # scanned states vary per device; every cross-device value above goes through psum/pmean.
    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")),
                            out_specs=(P(), P()), check_vma=False)
    return jax.jit(sharded, donate_argnums=0)


