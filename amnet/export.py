"""A training run as a device model file: its parameters and the recognizer's configuration.

    python -m neuraldiff.cli export --run=runs/demo --out=device.safetensors

The file is the neural-diff model file (`neuraldiff.model_file`: safetensors, fingerprint,
version) with the configuration the device runtime needs (`amnet.device.spec`) in its metadata:
model and frontend (with the run's CMVN statistics), the token texts and the decoders' label
bound. Every parameter is kept, training-only heads (CTC, the pruned loss's simple joint)
included, so that update packages built against the run's parameters apply to the file; the
runtime ignores those heads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections

from amnet import build
from amnet.device.spec import METADATA_KEY, DeviceSpec
from amnet.training import checkpointing, rundir
from neuraldiff import model_file, updates


def device_spec(config: ml_collections.ConfigDict) -> DeviceSpec:
    """The recognizer's configuration from a run's (resolved) config."""
    tokenizer = build.tokenizer(config)
    model = dataclasses.asdict(build.model_config(config, tokenizer.vocab_size))
    front, _ = build.frontend_configs(config)
    spec = DeviceSpec(model, dataclasses.asdict(front), tokenizer.token_texts(),
                      int(config.eval.get("max_length", 160)))
    spec.check()
    return spec


def device_metadata(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The model-file metadata that makes a parameter file a recognizer."""
    return {METADATA_KEY: device_spec(config).to_json()}


def export_run(run_dir: str | Path, out: str | Path, version: int = 0) -> str:
    """Writes the newest checkpoint of `run_dir` as a device model file; returns its
    fingerprint."""
    params, _ = checkpointing.load_params(run_dir)
    return model_file.save(out, updates.flat(params), version=version,
                           metadata=device_metadata(rundir.read_run_config(run_dir)))
