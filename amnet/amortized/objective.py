"""AmNet's training objective: the RNN-T objective (`amnet.rnnt.objective`, L_asr) plus the
compute cost and the amortization term of the arbitrator's routing.

Per utterance of n frames (`docs/amnet.md`):
  L = L_asr + λ_cost · mean_t E_p[C]/C_max + λ_amr · mean_t (1 − E_p[C]/C_max) · relu(1 − b_t/β)
      [+ λ_ent · mean_t H(p_t), `amnet.entropy_weight`: sharpens p_t; 0 by default]
with p_t = softmax(z_t) the arbitrator's distribution over branches (the straight-through
Gumbel sample is drawn from it), E_p[C] = Σ_k p_t[k] C_k, C_k the counted FLOPs of a frame
routed to branch k (`amnet.amortized.costs.FrameCosts.per_branch`), C_max = max_k C_k, and b_t the
backlog of the simulated processor (no gradient). The ablation `amortization = "upl"` replaces
the third term by λ_upl · UPL / Δ, the utterance's final user-perceived latency in frames,
differentiated through the latency recursion into the straight-through decisions.
"""


from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from amnet.amortized import router
from amnet.amortized.costs import frame_costs
from amnet.amortized.encoder import RoutingTrace
from amnet.rnnt.objective import Objective, asr_loss
from amnet.rnnt.transducer import Transducer

# A frame counts as decided when max_k p_t[k] exceeds this ("confident": p = softmax(z), the
# distribution decisions are drawn from; "binary": the Gumbel-softmax sample y at temperature τ).
CONFIDENT = 0.99


def routing_terms(trace: RoutingTrace, lengths: jax.Array, branch_flops: jax.Array, *,
                  backlog_threshold_s: float, frame_period_s: float) -> dict[str, jax.Array]:
    """Per-utterance means over valid frames `[B]` of the loss terms and routing statistics."""
    frames = trace.logits.shape[1]
    valid = (jnp.arange(frames)[None, :] < lengths[:, None]).astype(jnp.float32)
    count = jnp.maximum(lengths, 1).astype(jnp.float32)
    mean = lambda x: jnp.sum(x * valid, axis=1) / count  # noqa: E731
    probs = jax.nn.softmax(trace.logits, axis=-1)
    expected = probs @ (branch_flops / jnp.max(branch_flops))  # E_p[C] / C_max  [B, T]
    no_backlog = jax.nn.relu(1.0 - jax.lax.stop_gradient(trace.backlog) / backlog_threshold_s)
    last = jnp.take_along_axis(trace.finish, (lengths - 1)[:, None], axis=1)[:, 0]
    terms = {
        "cost": mean(expected),
        "amortization": mean((1.0 - expected) * no_backlog),
        "upl_frames": (last - lengths * frame_period_s) / frame_period_s,
        "flops_per_frame": mean(trace.frame_flops),
        "confident_frames": mean((jnp.max(probs, axis=-1) > CONFIDENT).astype(jnp.float32)),
        "binary_frames": mean((jnp.max(trace.soft, axis=-1) > CONFIDENT).astype(jnp.float32)),
        "entropy": mean(-jnp.sum(probs * jax.nn.log_softmax(trace.logits, axis=-1), axis=-1)),
    }
    for k in range(trace.gates.shape[-1]):
        terms[f"branch_{k}_frames"] = mean(jax.lax.stop_gradient(trace.gates[..., k]))
    return terms


def amnet_objective(model: Transducer, config: ml_collections.ConfigDict,
                    loss_config: ml_collections.ConfigDict | None = None) -> Objective:
    """L_asr plus the routing terms of `config` (the `amnet` block of a config file)."""
    if config.amortization not in ("amr", "upl", "none"):
        raise ValueError(f"amortization must be amr, upl or none, got {config.amortization!r}")
    branches = len(model.config.encoder_branches)
    if branches < 2:
        raise ValueError("the AmNet objective needs two or more encoder branches")
    branch_flops = jnp.asarray(frame_costs(model.config).per_branch, jnp.float32)
    temperature = router.temperature_schedule(config.temperature)

    def objective(params, features, lengths, batch, rows, key, step):
        keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(rows)
        noise = jax.vmap(lambda k: jax.random.gumbel(k, (features.shape[1], branches)))(keys)
        tau = temperature(step)
        losses = model.apply({"params": params}, features, lengths, batch["tokens"],
                             batch["token_lengths"], routing_noise=noise,
                             temperature=tau, method=Transducer.forward)
        costs, asr_metrics = asr_loss(losses, loss_config, step)
        terms = routing_terms(losses.trace, lengths, branch_flops,
                              backlog_threshold_s=config.backlog_threshold_s,
                              frame_period_s=model.config.frame_period_s)
        loss = costs + config.cost_weight * terms["cost"]
        if config.amortization == "amr":
            loss = loss + config.amr_weight * terms["amortization"]
        elif config.amortization == "upl":
            loss = loss + config.upl_weight * terms["upl_frames"]
        loss = loss + config.get("entropy_weight", 0.0) * terms["entropy"]
        metrics = {k: jax.lax.stop_gradient(v) for k, v in terms.items()}
        metrics["rnnt"] = jax.lax.stop_gradient(losses.rnnt)
        metrics.update(asr_metrics)
        metrics["temperature"] = jnp.full_like(costs, tau)
        return loss, metrics

    return objective
