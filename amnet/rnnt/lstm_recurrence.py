"""The LSTM time loop with a hand-written backward pass (`jax.custom_vjp`).

Autodiff of `lax.scan` accumulates the recurrent kernel's gradient inside the reverse loop:
one small `[P, B] @ [B, 4H]` product and a read-modify-write of the whole `[P, 4H]` gradient
per frame. Here the reverse loop only carries (dh, dc) and emits the gate gradients `[T, B, 4H]`;
the weight gradients are then one large product each, outside the loop:

  dW_h = Σ_t h_{t-1}ᵀ dz_t = einsum('tbp,tbg->pg', h_prev, dz)
  dW_p = Σ_t ĥ_tᵀ dh_t      (projection, ĥ the unprojected output)

and the input gates' gradient is dz itself (their product `x W_x` is hoisted out of the loop in
the forward pass, so its gradient is one product as well). Same equations and masking as
`amnet.rnnt.lstm.LSTM` (gates i, f, g, o; frames with `valid` 0 keep the carry and output zeros);
float32 kernels stored as one matrix (dense or sparse). `tests/rnnt/test_transducer.py` checks
values and gradients against autodiff of the plain scan.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Carry = tuple[jax.Array, jax.Array]


def _forward(gates_x, valid, carry, recurrent, projection):
    """Scan; returns outputs `[T, B, P]`, final carry and the residuals of every frame."""

    def step(carry, inputs):
        gx, v = inputs
        h, c = carry
        z = gx + h @ recurrent
        zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
        si, sf, tg, so = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)
        c_new = sf * c + si * tg
        tc = jnp.tanh(c_new)
        raw = so * tc
        h_new = raw @ projection if projection is not None else raw
        new_carry = (jnp.where(v, h_new, h), jnp.where(v, c_new, c))
        residual = (h, c, jnp.concatenate([si, sf, tg, so], axis=-1), tc,
                    raw if projection is not None else None)
        return new_carry, (jnp.where(v, h_new, 0.0), residual)

    final, (outputs, residuals) = jax.lax.scan(step, carry, (gates_x, valid))
    return outputs, final, residuals


@jax.custom_vjp
def recurrence(gates_x: jax.Array, valid: jax.Array, carry: Carry, recurrent: jax.Array,
               projection: jax.Array | None) -> tuple[jax.Array, Carry]:
    """gates_x `[T, B, 4H]` (x W_x + b), valid `[T, B, 1]` (float 0/1), carry (h `[B, P]`,
    c `[B, H]`), recurrent `[P, 4H]`, projection `[H, P]` or None -> (outputs `[T, B, P]`,
    final carry)."""
    outputs, final, _ = _forward(gates_x, valid, carry, recurrent, projection)
    return outputs, final


def _fwd(gates_x, valid, carry, recurrent, projection):
    outputs, final, residuals = _forward(gates_x, valid, carry, recurrent, projection)
    return (outputs, final), (valid, residuals, recurrent, projection)


def _bwd(saved, cotangents):
    valid, (h_prev, c_prev, acts, tanh_c, raw), recurrent, projection = saved
    d_outputs, (dh_final, dc_final) = cotangents
    recurrent_t = recurrent.T
    projection_t = projection.T if projection is not None else None

    def step(carry, inputs):
        dh, dc = carry  # cotangents of the carry after this frame
        d_out, v, c, act, tc = inputs
        si, sf, tg, so = jnp.split(act, 4, axis=-1)
        dh_new = v * (dh + d_out)
        dc_new = v * dc
        d_raw = dh_new @ projection_t if projection_t is not None else dh_new
        dc_total = dc_new + d_raw * so * (1.0 - tc * tc)
        dz = jnp.concatenate([dc_total * tg * si * (1.0 - si),
                              dc_total * c * sf * (1.0 - sf),
                              dc_total * si * (1.0 - tg * tg),
                              d_raw * tc * so * (1.0 - so)], axis=-1)
        dh_prev = dz @ recurrent_t + (1.0 - v) * dh
        dc_prev = dc_total * sf + (1.0 - v) * dc
        return (dh_prev, dc_prev), (dz, dh_new)

    (dh0, dc0), (dz, dh_new) = jax.lax.scan(
        step, (dh_final, dc_final), (d_outputs, valid, c_prev, acts, tanh_c), reverse=True)
    d_recurrent = jnp.einsum("tbp,tbg->pg", h_prev, dz)
    d_projection = (jnp.einsum("tbh,tbp->hp", raw, dh_new) if projection is not None
                    else None)
    return dz, jnp.zeros_like(valid), (dh0, dc0), d_recurrent, d_projection


recurrence.defvjp(_fwd, _bwd)
