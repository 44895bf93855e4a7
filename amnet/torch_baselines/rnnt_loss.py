"""The RNN-T loss in plain PyTorch (no torchaudio), the same lattice as `amnet.rnnt.loss`:

  alpha(0, 0) = 0
  alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + emit(t, u-1))
  cost = -(alpha(T-1, U) + blank(T-1, U))

run along anti-diagonals n = t + u (one vector op over u per diagonal); autograd gives the
gradient. logits `[B, T, U+1, V]` -> costs `[B]`.
"""

from __future__ import annotations

import torch

NEG = -1e30


def rnnt_loss(logits: torch.Tensor, logit_lengths: torch.Tensor, targets: torch.Tensor,
              target_lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    batch, frames, width, _ = log_probs.shape
    blank_lp = log_probs[..., blank]  # [B, T, U+1]
    padded = torch.cat([targets, targets.new_full((batch, 1), blank)], dim=1)[:, :width]
    emit_lp = torch.gather(log_probs, 3, padded[:, None, :, None].expand(
        batch, frames, width, 1)).squeeze(-1)  # [B, T, U+1]: log P(y_{u+1} | t, u)
    u = torch.arange(width, device=logits.device)
    neg = torch.full((batch, width), NEG, device=logits.device)
    alpha = torch.where(u[None] == 0, torch.zeros_like(neg), neg)
    alphas = [alpha]
    for n in range(1, frames + width - 1):
        t = n - u
        t_below = (t - 1).clamp(0, frames - 1)
        from_below = alpha + blank_lp[:, t_below, u]
        from_below = torch.where(((t >= 1) & (t <= frames))[None], from_below, neg)
        prev_left = torch.cat([neg[:, :1], alpha[:, :-1]], dim=1)
        from_left = prev_left + emit_lp[:, t.clamp(0, frames - 1), (u - 1).clamp(min=0)]
        from_left = torch.where(((u >= 1) & (t >= 0) & (t < frames))[None], from_left, neg)
        alpha = torch.where(((t >= 0) & (t < frames))[None],
                            torch.logaddexp(from_below, from_left), neg)
        alphas.append(alpha)
    alphas = torch.stack(alphas)  # [N, B, U+1]
    index = torch.arange(batch, device=logits.device)
    last_t = logit_lengths - 1
    final = alphas[last_t + target_lengths, index, target_lengths]
    return -(final + blank_lp[index, last_t, target_lengths])
