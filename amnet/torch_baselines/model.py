"""The RNN-T of `amnet.rnnt.transducer` with one encoder, in PyTorch, numerically the same.

Same computation as the JAX model (`amnet/rnnt/lstm.py`, `amnet/rnnt/transducer.py`): LSTM gates in
order (i, f, g, o) with one bias, optional projection (LSTMP), frames past an utterance's
length keep the carry and output zeros; embedding of [blank, y_1..y_U] into an LSTM prediction
network; joint `tanh(enc W_e + b_e + pred W_p) W_out + b_out`. Dense and sparse encoders use
`torch.nn.LSTM` (a sparse one multiplies its weights by fixed masks); low-rank ones (`W = U V`)
run their own recurrence. Shapes: features `[B, T, D]`, targets `[B, U]`.
"""

from __future__ import annotations

import torch
from torch import nn

from amnet.rnnt.flops import LinearSpec
from amnet.rnnt.transducer import TransducerConfig


def _valid(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]  # [B, T]


class MaskedLSTM(nn.Module):
    """One LSTM layer (dense, or sparse with fixed weight masks) on `torch.nn.LSTM`."""

    def __init__(self, input_dim: int, hidden: int, projection: int | None):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, batch_first=True, proj_size=projection or 0)
        # One trained bias, as in JAX: bias_hh stays zero (two trained copies would double the
        # bias's step size and count its gradient twice in the clipping norm).
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()
        self.lstm.bias_hh_l0.requires_grad_(False)
        self.masks: dict[str, torch.Tensor] = {}

    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Fixed 0/1 masks for `weight_ih_l0`, `weight_hh_l0`, `weight_hr_l0` (sparse)."""
        self.masks = masks

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.masks:
            weights = {name: getattr(self.lstm, name) * mask for name, mask in self.masks.items()}
            outputs, _ = torch.func.functional_call(self.lstm, weights, (x,))
        else:
            outputs, _ = self.lstm(x)
        # A unidirectional LSTM's outputs at t < length do not depend on later frames; zeroing
        # the padded frames gives the JAX layer's outputs.
        return outputs * _valid(lengths, x.shape[1])[..., None]


class LowRankLSTM(nn.Module):
    """One LSTM layer whose kernels are factored `W = U V` (`lowrank(r)`)."""

    def __init__(self, input_dim: int, hidden: int, projection: int | None, rank: int):
        super().__init__()
        out = projection or hidden
        self.hidden, self.projection = hidden, projection
        factor = lambda a, b: nn.Parameter(torch.empty(a, b))  # noqa: E731
        self.input_u, self.input_v = factor(input_dim, rank), factor(rank, 4 * hidden)
        self.recurrent_u, self.recurrent_v = factor(out, rank), factor(rank, 4 * hidden)
        self.bias = nn.Parameter(torch.zeros(4 * hidden))
        if projection:
            self.projection_u = factor(hidden, rank)
            self.projection_v = factor(rank, projection)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        gates_x = (x @ self.input_u) @ self.input_v + self.bias
        h = x.new_zeros(batch, self.projection or self.hidden)
        c = x.new_zeros(batch, self.hidden)
        valid = _valid(lengths, frames)
        outputs = []
        for t in range(frames):
            gates = gates_x[:, t] + (h @ self.recurrent_u) @ self.recurrent_v
            i, f, g, o = gates.chunk(4, dim=-1)
            new_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            new_h = torch.sigmoid(o) * torch.tanh(new_c)
            if self.projection:
                new_h = (new_h @ self.projection_u) @ self.projection_v
            keep = valid[:, t, None]
            h, c = torch.where(keep, new_h, h), torch.where(keep, new_c, c)
            outputs.append(torch.where(keep, new_h, torch.zeros_like(new_h)))
        return torch.stack(outputs, dim=1)


class TorchTransducer(nn.Module):
    def __init__(self, config: TransducerConfig):
        super().__init__()
        if len(config.encoder_branches) != 1:
            raise ValueError("the PyTorch baselines have one encoder (AmNet stays in JAX), got "
                             f"branches {config.encoder_branches}")
        self.config = config
        spec = LinearSpec.parse(config.encoder_branches[0])
        out = config.encoder_projection or config.encoder_hidden
        dims = [config.input_dim] + [out] * (config.encoder_layers - 1)
        if spec.kind == "lowrank":
            self.encoder = nn.ModuleList(LowRankLSTM(d, config.encoder_hidden,
                                                     config.encoder_projection, spec.rank)
                                         for d in dims)
        else:
            self.encoder = nn.ModuleList(MaskedLSTM(d, config.encoder_hidden,
                                                    config.encoder_projection) for d in dims)
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        if config.predictor == "stateless":  # amnet.rnnt.predictor: the last c labels, one layer
            self.predictor = nn.ModuleList([nn.Linear(config.predictor_context * config.embed_dim,
                                                      config.predictor_hidden)])
        else:
            pred_dims = ([config.embed_dim]
                         + [config.predictor_hidden] * (config.predictor_layers - 1))
            self.predictor = nn.ModuleList(MaskedLSTM(d, config.predictor_hidden, None)
                                           for d in pred_dims)
        self.encoder_to_joint = nn.Linear(out, config.joint_dim)
        self.predictor_to_joint = nn.Linear(config.predictor_hidden, config.joint_dim, bias=False)
        self.output = nn.Linear(config.joint_dim, config.vocab_size)
        self.ctc_output = nn.Linear(out, config.vocab_size) if config.ctc_head else None

    def encoder_outputs(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features `[B, T, D]` -> the encoder's last layer `[B, T, P]`."""
        x = features
        for layer in self.encoder:
            x = layer(x, lengths)
        return x

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features `[B, T, D]` -> enc_proj `[B, T, J]`."""
        return self.encoder_to_joint(self.encoder_outputs(features, lengths))

    def predict(self, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """targets `[B, U]` -> pred_proj `[B, U+1, J]`."""
        start = torch.full_like(targets[:, :1], self.config.blank)
        x = self.embed(torch.cat([start, targets], dim=1))
        if self.config.predictor == "stateless":
            return self.predictor_to_joint(self.stateless(x))
        for layer in self.predictor:
            x = layer(x, target_lengths + 1)
        return self.predictor_to_joint(x)

    def stateless(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings `[B, L, E]` -> relu(window of the last c @ W + b) `[B, L, H]`, zeros before
        the start (`amnet.rnnt.predictor.StatelessPredictor`)."""
        context = self.config.predictor_context
        padded = nn.functional.pad(x, (0, 0, context - 1, 0))
        windows = torch.cat([padded[:, k: k + x.shape[1]] for k in range(context)], dim=-1)
        return torch.relu(self.predictor[0](windows))

    def joint(self, enc_proj: torch.Tensor, pred_proj: torch.Tensor) -> torch.Tensor:
        """Logits `[..., V]` from broadcastable enc_proj and pred_proj `[..., J]`."""
        return self.output(torch.tanh(enc_proj + pred_proj))

    def forward(self, features, lengths, targets, target_lengths) -> torch.Tensor:
        """Logits `[B, T, U+1, V]`."""
        return self.forward_with_ctc(features, lengths, targets, target_lengths)[0]

    def forward_with_ctc(self, features, lengths, targets, target_lengths,
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Joint logits `[B, T, U+1, V]` and the CTC head's logits `[B, T, V]` (or None)."""
        outputs = self.encoder_outputs(features, lengths)
        pred = self.predict(targets, target_lengths)
        logits = self.joint(self.encoder_to_joint(outputs)[:, :, None], pred[:, None])
        return logits, (self.ctc_output(outputs) if self.ctc_output is not None else None)
