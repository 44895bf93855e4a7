"""Helpers shared by the tests: paths, subprocess environments, the tiny corpus's names, random
device models and WAV bytes. Fixtures live in conftest.py."""

import contextlib
import io
import os
import subprocess
import sys
import wave
from dataclasses import asdict
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from amnet import build
from amnet.amortized import pruning
from amnet.data.text import CHAR_VOCAB_SIZE
from amnet.device.spec import DeviceSpec
from amnet.rnnt import frontend
from amnet.rnnt.flops import LinearSpec
from amnet.rnnt.transducer import Transducer, TransducerConfig

ROOT = Path(__file__).resolve().parents[1]
CHARACTERS = CHAR_VOCAB_SIZE  # the character tokenizer's vocabulary: blank + characters
TINY_SEED = 7
# Timeouts on subprocesses and waits are hang guards only: a run that is merely slow (machines
# differ by 2-3x, and make test runs two workers) must never fail on time.
HANG_GUARD_S = 1800
# The JAX decoders' bounds in the parity tests (2 labels per frame: smaller programs to compile).
SEARCH = {"max_length": 40, "max_symbols_per_frame": 2}


def tiny_name(generation: int) -> str:
    return f"spoken_commands/tiny_g{generation}_s{TINY_SEED}"


def cpu_env(devices: int = 1) -> dict:
    """The environment of a test's subprocess: CPU JAX with `devices` host devices."""
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_PLATFORMS": "cpu"}


def random_model(branches, predictor="lstm", num_mels=80, projection=None):
    """A random transducer (no training): its decisions exercise every path of the search."""
    config = TransducerConfig(input_dim=24, vocab_size=7, encoder_layers=2, encoder_hidden=16,
                              encoder_projection=projection, embed_dim=6, predictor=predictor,
                              predictor_hidden=12, joint_dim=10, encoder_branches=branches,
                              arbitrator_hidden=5, frame_period_s=0.03, processor_flops=3e5,
                              blank_bias_init=1.0, ctc_head=True)
    model = build.transducer(config)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 30, 24)).astype(np.float32)
    params = jax.device_get(model.init(jax.random.key(0), x, np.array([30]),
                                       np.ones((1, 3), np.int32), np.array([3]))["params"])
    # Random LSTMs change slowly: a larger, centred encoder projection makes the joint's
    # decisions follow the frames (labels, several per frame, and blanks).
    joint = params["encoder_to_joint"]
    joint["kernel"] = np.asarray(joint["kernel"]) * 10
    enc_proj, _ = model.apply({"params": params}, x, np.array([30]), method=Transducer.encode)
    joint["bias"] = np.asarray(joint["bias"]) - np.asarray(enc_proj[0]).mean(0)
    flat = {}
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        flat["/".join(p.key for p in path)] = np.array(value, np.float32)
    for k, text in enumerate(branches):  # sparse branches: 80% exact zeros, as trained
        spec = LinearSpec.parse(text)
        if spec.kind == "sparse":
            for name, w in flat.items():
                if name.startswith(f"encoder/branch_{k}/") and w.ndim == 2:
                    if spec.block:
                        w[...] = np.asarray(pruning.block_prune(w, spec.sparsity, spec))
                    else:
                        w[rng.random(w.shape) < 0.8] = 0.0
    if len(branches) > 1:  # a sharper arbitrator: decisions that change from frame to frame
        flat["encoder/arbitrator/w2"] *= 8.0
        flat["encoder/arbitrator/b2"][2] = 1.0
    nested = {}
    for name, w in flat.items():
        node = nested
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = w
    spec = DeviceSpec(asdict(config), asdict(frontend.FrontendConfig(num_mels=num_mels)),
                      tuple("_abcdef"), 40)
    return model, nested, flat, spec, x


def transcribe_cli(*args):
    """`python -m amnet.transcribe` in this process (its imports are already paid for)."""
    from amnet import transcribe

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = transcribe.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def wav_bytes(samples: np.ndarray, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    samples = np.asarray(samples, np.int16)
    samples = samples[:, None] if samples.ndim == 1 else samples
    with wave.open(buffer, "wb") as f:
        f.setnchannels(samples.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


# The tiny preset, the test runs' config.
CONFIG = f"{ROOT}/experiments/configs/baseline.py:tiny"

def train_command(workdir, data_dir, *extra):
    return [sys.executable, "-m", "experiments.train", f"--config={CONFIG}",
            f"--workdir={workdir}", f"--config.data.name={tiny_name(0)}",
            f"--config.data.data_dir={data_dir}", *extra]

def run_command(command, devices=1, check=True):
    out = subprocess.run(command, cwd=ROOT, env=cpu_env(devices), capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    if check and out.returncode:
        raise AssertionError(f"{command} failed:\n{out.stderr[-4000:]}")
    return out

def final_params(workdir):
    latest = Path(workdir) / "checkpoints" / "latest"
    step = max(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    checkpointer = ocp.StandardCheckpointer()
    path = latest / str(step) / "state"
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=single),
                          checkpointer.metadata(path).item_metadata)
    return step, checkpointer.restore(path, target)["params"]

def leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in sorted(tree.items()):
            yield from leaves(value, f"{prefix}/{key}")
    else:
        yield prefix, np.asarray(tree)
