"""AmNet's cost model: the counted FLOPs C_k of one 30 ms frame routed to encoder branch k
(the branch, the arbitrator, the decoder's per-frame work), from the generic counts of
`amnet.rnnt.flops`. The arbitrator's input is the frame and the simulated backlog
(`amnet.amortized.arbitrator`). Used by the encoder (its backlog), the objective, scoring and
the device runtime (no JAX here)."""

from __future__ import annotations

import dataclasses

from amnet.rnnt.flops import LinearSpec, decoder_frame_flops, encoder_frame_flops, linear_flops


def arbitrator_flops(input_dim: int, hidden: int, branches: int) -> int:
    """The arbitrator MLP (`amnet.amortized.arbitrator`), one frame: [x; backlog] -> relu(hidden) ->
    logits, with the backlog also feeding the logits directly."""
    first = linear_flops(input_dim + 1, hidden) + 2 * hidden  # matmul, bias, relu
    return first + linear_flops(hidden + 1, branches) + branches

@dataclasses.dataclass(frozen=True)
class FrameCosts:
    """Counted FLOPs of one 30 ms frame of a transducer, by part."""

    branches: tuple[int, ...]  # each encoder branch
    arbitrator: int  # 0 with a single branch
    decoder: int  # `decoder_frame_flops`

    @property
    def per_branch(self) -> tuple[int, ...]:
        """C_k: the whole frame's cost when routed to branch k."""
        return tuple(b + self.arbitrator + self.decoder for b in self.branches)

def frame_costs(config) -> FrameCosts:
    """`FrameCosts` of a `amnet.rnnt.transducer.TransducerConfig`."""
    specs = [LinearSpec.parse(b) for b in config.encoder_branches]
    branches = tuple(encoder_frame_flops(config.input_dim, config.encoder_hidden,
                                         config.encoder_layers, config.encoder_projection, s)
                     for s in specs)
    arbitrator = (arbitrator_flops(config.input_dim, config.arbitrator_hidden, len(specs))
                  if len(specs) > 1 else 0)
    decoder = decoder_frame_flops(config.encoder_projection or config.encoder_hidden,
                                  config.joint_dim, config.vocab_size, config.embed_dim,
                                  config.predictor_hidden, config.predictor_layers,
                                  config.predictor_context
                                  if getattr(config, "predictor", "lstm") == "stateless" else 0)
    return FrameCosts(branches, arbitrator, decoder)
