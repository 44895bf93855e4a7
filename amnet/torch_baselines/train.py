r"""Train and evaluate a PyTorch baseline (single-encoder RNN-T: dense, sparse or low-rank) on
the project's data pipeline; the run directory receives the shared results
(`amnet.evaluation.results`).

    python -m experiments.torch_baselines.train \
        --config=experiments/configs/baseline.py:tiny --workdir=runs/torch_tiny \
        [--config.model.encoder_hidden=64] [--init=jax|torch] [--restart]

Same config files as `experiments.train`. What is shared with a JAX run of the same config:
the grain pipeline (same batches in the same order), the features (`amnet.training.step.
train_features`, SpecAugment masks included, from the same seed), the initial weights
(`--init=jax`, the default: the JAX model's initialization converted by `convert.to_torch`),
the optimizer (global-norm clipping, AdamW on `amnet.training.optim.learning_rate_schedule`), the
pruning schedule of a sparse encoder, and the scorer. What differs: PyTorch computes the model,
loss and gradients (eager, padding trimmed to each batch's longest utterance), there is no
periodic validation, and the test set is decoded greedily only (no beam search in the port:
`wer_beam` is null). A run is not resumable: `--restart` clears an unfinished one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors.torch
import torch

from amnet import build
from amnet.amortized import pruning
from amnet.data import datasets, input_pipeline
from amnet.evaluation import results as results_io
from amnet.evaluation import scoring
from amnet.rnnt import cmvn, frontend
from amnet.rnnt.flops import LinearSpec
from amnet.torch_baselines import convert
from amnet.torch_baselines.decoding import greedy_decode
from amnet.torch_baselines.model import MaskedLSTM, TorchTransducer
from amnet.torch_baselines.rnnt_loss import rnnt_loss
from amnet.training import loop, optim, parallel, rundir
from amnet.training import step as train_step
from amnet.training.metric_writers import MetricWriter

# Files a run writes (what --restart removes).
RUN_FILES = ("config.json", "metrics.jsonl", "model.safetensors", results_io.OUTPUTS,
             results_io.METRICS)


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.array(x)).to(dtype)


def _trimmed(features, lengths, batch) -> tuple[torch.Tensor, ...]:
    """Torch tensors of a batch, padding cut to its longest utterance and transcript."""
    lengths = np.asarray(lengths)
    frames = max(int(lengths.max()), 1)
    labels = max(int(batch["token_lengths"].max()), 1)
    return (_tensor(np.asarray(features)[:, :frames]), _tensor(lengths, torch.long),
            _tensor(batch["tokens"][:, :labels], torch.long),
            _tensor(batch["token_lengths"], torch.long), _tensor(batch["weights"]))


class Pruner:
    """`amnet.amortized.pruning.make_pruner` for a sparse PyTorch encoder: at prune steps the
    smallest |w| of each encoder kernel are masked (same cubic schedule, same tie order); the
    masks stay fixed in between."""

    WEIGHTS = ("weight_ih_l0", "weight_hh_l0", "weight_hr_l0")

    def __init__(self, model: TorchTransducer, sparsity: float,
                 config: ml_collections.ConfigDict):
        self.model, self.sparsity, self.config = model, sparsity, config

    def __call__(self, step: int) -> None:
        c = self.config
        if not (c.start_step <= step <= c.end_step and (step - c.start_step) % c.every == 0):
            return
        target = float(pruning.sparsity_at(step, self.sparsity, c))
        for layer in self.model.encoder:
            assert isinstance(layer, MaskedLSTM)
            masks = {}
            for name in self.WEIGHTS:
                if hasattr(layer.lstm, name):
                    weight = getattr(layer.lstm, name).detach()
                    if name in layer.masks:
                        weight = weight * layer.masks[name]
                    # JAX kernels are [in, out]: rank in that layout so that ties break alike.
                    flat = weight.T.reshape(-1).abs()
                    order = torch.argsort(flat, stable=True)
                    keep = torch.ones_like(flat)
                    keep[order[: round(target * flat.numel())]] = 0.0
                    masks[name] = keep.reshape(weight.T.shape).T.contiguous()
            layer.set_masks(masks)


def prepare(config: ml_collections.ConfigDict, workdir: Path, restart: bool) -> None:
    state = rundir.status(workdir)
    if state == "finished":
        raise rundir.RunDirError(f"run directory {workdir} already holds a finished run")
    if state == "unfinished":
        if not restart:
            raise rundir.RunDirError(f"run directory {workdir} already holds a run; pass "
                                     "--restart to train it again from scratch")
        for name in RUN_FILES:
            (workdir / name).unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json(indent=2))


def asr_loss(rnnt: torch.Tensor, ctc_logits: torch.Tensor, lengths: torch.Tensor,
             tokens: torch.Tensor, token_lengths: torch.Tensor, loss: ml_collections.ConfigDict,
             step: int, blank: int) -> torch.Tensor:
    """`amnet.amortized.objective.asr_loss` in PyTorch: (1 - w) rnnt + w ctc (CTC alone during the
    warm-up); utterances whose targets do not fit their frames get no CTC cost."""
    ctc = torch.nn.functional.ctc_loss(
        torch.log_softmax(ctc_logits, dim=-1).transpose(0, 1), tokens, lengths, token_lengths,
        blank=blank, reduction="none", zero_infinity=True)
    if step < loss.get("ctc_only_steps", 0):
        return ctc
    return (1.0 - loss.ctc_weight) * rnnt + loss.ctc_weight * ctc


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, init: str = "jax",
                       restart: bool = False) -> dict:
    """The whole run; returns its metrics.json record."""
    if init not in ("jax", "torch"):
        raise ValueError(f"--init must be jax or torch, got {init!r}")
    workdir = Path(workdir)
    tokenizer = build.tokenizer(config)
    model_config = build.model_config(config, tokenizer.vocab_size)
    if len(model_config.encoder_branches) != 1:
        raise ValueError("the PyTorch baselines have one encoder; got branches "
                         f"{model_config.encoder_branches}")
    spec = LinearSpec.parse(model_config.encoder_branches[0])
    if model_config.loss != "fused":
        raise ValueError(f"the PyTorch baselines train with the exact RNN-T loss; got "
                         f"model.loss={model_config.loss!r} (pass --config.model.loss=fused)")
    if spec.block:
        raise ValueError(f"the PyTorch baselines prune unstructured weights; got {spec} "
                         "(block-sparse branches train in JAX)")
    if spec.kind == "sparse" and "pruning" not in config:
        raise ValueError("a sparse encoder needs a `pruning` block in the config")
    # The JAX runner's CMVN statistics (the same subset of the same split).
    config = cmvn.resolve(config, lambda: datasets.open_dataset(config, config.data.train_split))
    prepare(config, workdir, restart)
    torch.manual_seed(config.seed)
    front, augment = build.frontend_configs(config)

    train_source = datasets.open_dataset(config, config.data.train_split)
    train_pipe = datasets.pipeline_config(config, batch_size=config.train.global_batch_size,
                                         train=True)
    report = input_pipeline.scan(train_source, tokenizer, train_pipe)
    batches = iter(input_pipeline.make_dataset(train_source, tokenizer, report, train_pipe))

    # The JAX run's initial state: its weights (--init=jax) and its augmentation key.
    jax_model = build.transducer(model_config)
    schedule = optim.learning_rate_schedule(config.optimizer, config.train.steps)
    state = train_step.create_train_state(jax_model, build.optimizer(config),
                                          train_pipe.buckets[0], front, config.seed,
                                          parallel.make_mesh(1))
    model = (convert.to_torch(jax.device_get(state.params), model_config) if init == "jax"
             else TorchTransducer(model_config))
    base_key = jax.random.wrap_key_data(state.rng)
    features_of = jax.jit(lambda batch, step: train_step.train_features(
        batch, jnp.arange(batch["audio"].shape[0]), jax.random.fold_in(base_key, step), front,
        augment))
    o = config.optimizer
    trained = [p for p in model.parameters() if p.requires_grad]
    adamw = torch.optim.AdamW(trained, lr=0.0, betas=(o.b1, o.b2), eps=1e-8,
                              weight_decay=o.weight_decay)
    prune = (Pruner(model, spec.sparsity, config.pruning) if spec.kind == "sparse" else None)
    writer = MetricWriter(workdir, tensorboard=False)

    start = time.perf_counter()
    window = {"utterances": 0.0, "time": start}

    def step_fn(state: dict, batch: dict) -> tuple[dict, dict]:
        """One PyTorch step; `state`: {"step": updates taken so far (optax's count)}."""
        step = state["step"] + 1
        device_batch = {k: jnp.asarray(batch[k]) for k in ("audio", "audio_lengths")}
        features, lengths = features_of(device_batch, step - 1)
        feats, lens, tokens, token_lengths, weights = _trimmed(features, lengths, batch)
        model.train()
        logits, ctc_logits = model.forward_with_ctc(feats, lens, tokens, token_lengths)
        costs = rnnt_loss(logits, lens, tokens, token_lengths, blank=model_config.blank)
        if ctc_logits is not None:
            costs = asr_loss(costs, ctc_logits, lens, tokens, token_lengths, config.loss,
                             step - 1, model_config.blank)
        per_row = token_lengths.float() if build.loss_normalization(config) == "token" else 1.0
        loss = (costs * weights).sum() / (weights * per_row).sum()
        adamw.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trained, o.clip_norm))
        finite = math.isfinite(loss.item()) and math.isfinite(grad_norm)
        if finite:
            for group in adamw.param_groups:
                group["lr"] = float(schedule(step - 1))  # optax counts updates from 0
            adamw.step()
            if prune is not None:
                prune(step)
        return {"step": step}, {"loss": loss.item(), "grad_norm": grad_norm,
                                "nonfinite": int(not finite),
                                "utterances": float(weights.sum())}

    def log(step, state, metrics):
        window["utterances"] += metrics["utterances"]
        if step % config.train.log_every == 0 or step == config.train.steps:
            now = time.perf_counter()
            writer.write(step, {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                                "learning_rate": float(schedule(step - 1)),
                                "utterances_per_s": window["utterances"] / (now - window["time"]),
                                "nonfinite_steps": metrics["nonfinite_steps"],
                                "train_time_s": now - start})
            window.update(utterances=0.0, time=now)

    loop.fit(step_fn, {"step": 0}, batches, lambda batch: batch,
             range(1, config.train.steps + 1),
             max_nonfinite_steps=config.train.max_nonfinite_steps, hooks=[log])
    train_time = time.perf_counter() - start
    writer.close()
    with torch.no_grad():
        for layer in model.encoder:
            if isinstance(layer, MaskedLSTM):
                for name, mask in layer.masks.items():
                    getattr(layer.lstm, name).mul_(mask)
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(workdir / "model.safetensors"))

    outputs = transcribe(model, config, front, tokenizer)
    results_io.write_outputs(workdir / results_io.OUTPUTS, outputs)
    record = scoring.run_metrics(
        outputs, run=workdir.name, framework="torch", dataset=config.data.name,
        split=config.data.test_split, model=model_config,
        latency=scoring.LatencyModel.of(model_config), config=json.loads(config.to_json()),
        train_time_s=train_time, hardware=hardware())
    results_io.write_metrics(workdir / results_io.METRICS, record)
    return results_io.read_metrics(workdir / results_io.METRICS)


def transcribe(model: TorchTransducer, config: ml_collections.ConfigDict,
               front: frontend.FrontendConfig, tokenizer) -> list[results_io.UtteranceOutput]:
    """Greedy outputs of the test split (features from the JAX frontend, as in training)."""
    source, report, pipe = datasets.open_eval_split(config, config.data.test_split, tokenizer)
    featurize = jax.jit(lambda audio, n: frontend.featurize(audio, n, front))
    model.eval()
    out = []
    for batch in input_pipeline.make_dataset(source, tokenizer, report, pipe):
        features, lengths = featurize(batch["audio"], batch["audio_lengths"])
        feats, lens, *_ = _trimmed(features, lengths, batch)
        rows = np.flatnonzero(batch["weights"])
        hyps = greedy_decode(model, feats[rows], lens[rows],
                             max_symbols_per_frame=config.eval.max_symbols_per_frame,
                             max_length=config.eval.max_length)
        for r, hyp in zip(rows, hyps, strict=True):
            out.append(results_io.UtteranceOutput(
                id=str(batch["ids"][r]),
                reference=tokenizer.decode(batch["tokens"][r, : batch["token_lengths"][r]]),
                greedy=tokenizer.decode(hyp), beam=None, branches="0" * int(lens[r])))
    return out


def hardware() -> dict:
    return {**results_io.host_description(), "framework": f"torch {torch.__version__}",
            "backend": "cpu", "device_kind": "cpu", "devices": 1, "processes": 1,
            "threads": torch.get_num_threads()}
