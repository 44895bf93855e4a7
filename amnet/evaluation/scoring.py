"""The one scorer of test outputs, whichever framework decoded them.

Rules (the same for JAX runs, PyTorch baselines and results produced elsewhere):
  WER       jiwer edit counts on transcripts normalized by `amnet.data.text.normalize_text`, pooled
            over the split (errors / reference words)
  FLOPs     counted per frame by `amnet.amortized.costs.frame_costs` from the model description:
            a frame run by branch k costs C_k (encoder branch + arbitrator + decoder work)
  latency   `amnet.latency.simulate` of each utterance's frame costs on one processor of P
            FLOP/s with frames every Δ; UPL mean / p90 / max over utterances
  dataset   a SHA-256 fingerprint of the sorted (id, normalized reference) pairs: two runs are
            comparable only when their fingerprints agree
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from amnet.amortized.costs import frame_costs
from amnet.amortized.latency import simulate
from amnet.data.text import normalize_text
from amnet.evaluation import metrics, results
from amnet.evaluation.results import UtteranceOutput
from amnet.rnnt.flops import LinearSpec
from amnet.rnnt.transducer import TransducerConfig


@dataclasses.dataclass(frozen=True)
class LatencyModel:
    frame_period_s: float  # Δ
    processor_flops: float  # P

    @classmethod
    def of(cls, model: TransducerConfig) -> LatencyModel:
        return cls(model.frame_period_s, model.processor_flops)


def model_from_dict(fields: dict[str, Any]) -> TransducerConfig:
    """A `TransducerConfig` from its JSON form (metrics.json "model"); unknown fields are named."""
    known = {f.name for f in dataclasses.fields(TransducerConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"model description has unknown fields {unknown}")
    return TransducerConfig(**fields)


def upl_seconds(frame_flops: Sequence[np.ndarray], latency: LatencyModel) -> np.ndarray:
    """User-perceived latency `[N]` (seconds) of each utterance's frame costs `[T_i]`."""
    return np.array([simulate(f, frame_period_s=latency.frame_period_s,
                              processor_flops=latency.processor_flops).latency_s
                     for f in frame_flops])


def cost_columns(frame_flops: Sequence[np.ndarray], latency: LatencyModel) -> dict[str, float]:
    """MFLOPs per frame (over all frames) and UPL mean / p90 / max (ms, over utterances) of
    each utterance's counted frame costs `[T_i]`."""
    upl = upl_seconds(frame_flops, latency)
    return {"mflops_per_frame": float(np.concatenate(frame_flops).mean() / 1e6),
            "upl_mean_ms": 1e3 * float(upl.mean()),
            "upl_p90_ms": 1e3 * float(np.percentile(upl, 90)),
            "upl_max_ms": 1e3 * float(upl.max())}


def dataset_fingerprint(outputs: Sequence[UtteranceOutput]) -> str:
    pairs = sorted((o.id, normalize_text(o.reference, example_id=o.id)) for o in outputs)
    return hashlib.sha256("\n".join(f"{i}\t{r}" for i, r in pairs).encode()).hexdigest()


def score(outputs: Sequence[UtteranceOutput], model: TransducerConfig,
          latency: LatencyModel) -> dict[str, Any]:
    """The scored columns of metrics.json (`amnet.evaluation.results.FIELDS`) for `outputs`."""
    if not outputs:
        raise ValueError("no outputs to score")
    ids = [o.id for o in outputs]
    if len(set(ids)) != len(ids):
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"utterances scored twice: {duplicated[:5]}")
    refs = [o.reference for o in outputs]
    greedy = metrics.word_errors(refs, [o.greedy for o in outputs])
    has_beam = [o.beam is not None for o in outputs]
    if any(has_beam) and not all(has_beam):
        raise ValueError(f"{has_beam.count(False)} of {len(outputs)} utterances have no beam "
                         "hypothesis: decode all or none")
    beam = metrics.word_errors(refs, [o.beam for o in outputs]) if all(has_beam) else None
    has_lm = [o.beam_lm is not None for o in outputs]
    if any(has_lm) and not all(has_lm):
        raise ValueError(f"{has_lm.count(False)} of {len(outputs)} utterances have no beam + LM "
                         "hypothesis: decode all or none")
    beam_lm = metrics.word_errors(refs, [o.beam_lm for o in outputs]) if all(has_lm) else None

    costs = np.asarray(frame_costs(model).per_branch, np.float64)
    specs = [str(LinearSpec.parse(s)) for s in model.encoder_branches]
    routes = [np.frombuffer(o.branches.encode(), np.uint8) - ord("0") for o in outputs]
    for o, route in zip(outputs, routes, strict=True):
        if route.max() >= len(costs):
            raise ValueError(f"utterance {o.id!r} routes a frame to branch {route.max()}, the "
                             f"model has {len(costs)} ({specs})")
    every = np.concatenate(routes)
    return {
        "wer_greedy": greedy.rate,
        "wer_beam": beam.rate if beam is not None else None,
        "wer_beam_lm": beam_lm.rate if beam_lm is not None else None,
        **cost_columns([costs[r] for r in routes], latency),
        "frames_per_branch": {f"{k}:{s}": float(np.mean(every == k))
                              for k, s in enumerate(specs)},
        "latency_model": dataclasses.asdict(latency),
        "dataset": {"utterances": len(outputs), "words": greedy.reference_length,
                    "fingerprint": dataset_fingerprint(outputs)},
    }


def grouped_wer(outputs: Sequence[UtteranceOutput], groups: dict[str, str], *,
                field: str = "greedy") -> dict[str, dict[str, float]]:
    """WER of hypothesis `field` per group {group: {"wer", "utterances", "words"}}, with
    `groups` mapping utterance ids to a group; every output must have one."""
    missing = [o.id for o in outputs if o.id not in groups]
    if missing:
        raise ValueError(f"{len(missing)} utterances have no group, e.g. {missing[:3]}")
    out = {}
    for group in sorted(set(groups[o.id] for o in outputs)):
        members = [o for o in outputs if groups[o.id] == group]
        counts = metrics.word_errors([o.reference for o in members],
                                     [getattr(o, field) for o in members])
        out[group] = {"wer": counts.rate, "utterances": len(members),
                      "words": counts.reference_length}
    return out


def run_metrics(outputs: Sequence[UtteranceOutput], *, run: str, framework: str,
                dataset: str, split: str, model: TransducerConfig, latency: LatencyModel,
                config: dict | None, train_time_s: float | None, hardware: dict[str, Any],
                update_bytes: int | None = None) -> dict[str, Any]:
    """A whole metrics.json record (`amnet.evaluation.results`): the scores of `outputs` and the
    run."""
    scored = score(outputs, model, latency)
    scored["dataset"].update(name=dataset, split=split)
    return {"schema": results.SCHEMA, "run": run, "framework": framework, "config": config,
            "model": dataclasses.asdict(model), "update_bytes": update_bytes,
            "train_time_s": train_time_s, "hardware": hardware, **scored}
