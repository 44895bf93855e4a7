"""Optimizer and learning-rate schedule from the config (optax)."""

from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to `learning_rate * end_ratio`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=min(config.warmup_steps, max(total_steps - 1, 1)),
        decay_steps=max(total_steps, config.warmup_steps + 1),
        end_value=config.learning_rate * config.end_ratio)


def make_optimizer(config: ml_collections.ConfigDict,
                   total_steps: int) -> optax.GradientTransformation:
    """Gradient clipping by global norm, then AdamW on the schedule; with
    `arbitrator_lr_multiplier`, the arbitrator's updates are scaled by it (a faster-learning
    gate)."""
    chain = [optax.clip_by_global_norm(config.clip_norm),
             optax.adamw(learning_rate_schedule(config, total_steps), b1=config.b1,
                         b2=config.b2, weight_decay=config.weight_decay)]
    multiplier = config.get("arbitrator_lr_multiplier", 1.0)
    if multiplier != 1.0:
        chain.append(optax.masked(optax.scale(multiplier), _arbitrator_mask))
    return optax.chain(*chain)


def _arbitrator_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) == "arbitrator" for k in path), params)
