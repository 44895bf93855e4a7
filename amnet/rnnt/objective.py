"""The RNN-T training objective: the transducer's loss (+ the auxiliary CTC loss).

With a CTC head (`amnet.rnnt.ctc`) and a `loss` config block:
  L_asr = (1 - w) · L_rnnt + w · L_ctc      (w = loss.ctc_weight)
(L_rnnt: the exact loss, or the pruned and simple losses of `transducer_loss`)
and L_asr = L_ctc alone for the first `loss.ctc_only_steps` steps (a CTC warm-up of the
encoder). Without a head, L_asr = L_rnnt.

An objective is `objective(params, features, lengths, batch, rows, key, step)` ->
(per-utterance loss `[B]`, per-utterance metrics {name: `[B]`}); the train step weights both by
the batch's row weights.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from amnet.rnnt.transducer import Losses, Transducer

Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
# The pruned loss's `loss` block when it lacks them (experiments/configs/baseline.py sets both).
SIMPLE_SCALE = 0.5
PRUNED_WARMUP_STEPS = 200


def transducer_loss(losses: Losses, config: ml_collections.ConfigDict | None,
                    step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_rnnt `[B]`: the transducer's cost, or with the pruned loss
    `a(step) L_pruned + b(step) L_simple` (0 where the windows do not fit), a ramping from 0.1
    to 1 and b from 1 to `loss.simple_scale` over `loss.pruned_warmup_steps` (the windows are
    only as good as the simple joint that places them; 0 for fine-tunes of a trained model)."""
    if losses.simple is None:
        return losses.rnnt, {}
    if config is None:
        raise ValueError("the pruned loss needs a `loss` config block (simple_scale, "
                         "pruned_warmup_steps)")
    warmup = config.get("pruned_warmup_steps", PRUNED_WARMUP_STEPS)
    ramp = jnp.clip(step / warmup, 0.0, 1.0) if warmup > 0 else 1.0
    simple_scale = config.get("simple_scale", SIMPLE_SCALE)
    loss = ((0.1 + 0.9 * ramp) * losses.rnnt
            + (1.0 - (1.0 - simple_scale) * ramp) * losses.simple)
    return loss, {"simple": jax.lax.stop_gradient(losses.simple),
                  "pruned_feasible": losses.pruned_feasible.astype(jnp.float32)}


def asr_loss(losses: Losses, config: ml_collections.ConfigDict | None,
             step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_asr `[B]` of the module docstring, and per-utterance metrics {rnnt, ctc, ...}."""
    rnnt_loss, metrics = transducer_loss(losses, config, step)
    if losses.ctc is None:
        return rnnt_loss, metrics
    if config is None:
        raise ValueError("a model with a CTC head needs a `loss` config block (ctc_weight)")
    weight = config.ctc_weight
    ctc_only = step < config.get("ctc_only_steps", 0)
    loss = (jnp.where(ctc_only, 0.0, 1.0 - weight) * rnnt_loss
            + jnp.where(ctc_only, 1.0, weight) * losses.ctc)
    return loss, {**metrics, "rnnt": jax.lax.stop_gradient(losses.rnnt),
                  "ctc": jax.lax.stop_gradient(losses.ctc),
                  "ctc_feasible": losses.ctc_feasible.astype(jnp.float32)}


def rnnt_objective(model: Transducer,
                   config: ml_collections.ConfigDict | None = None) -> Objective:
    """The transducer's loss (with the CTC term of `config`, the `loss` block, if any)."""

    def objective(params, features, lengths, batch, rows, key, step):
        del rows, key
        losses = model.apply({"params": params}, features, lengths, batch["tokens"],
                             batch["token_lengths"], method=Transducer.forward)
        return asr_loss(losses, config, step)

    return objective
