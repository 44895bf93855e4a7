r"""The benchmark suite: every measurement side by side in one run, a table and results.json.

    python -m benchmarks.run [--quick] [--sections=train_step,loss,pipeline,streaming,diff]
        [--out=benchmarks/results.json] [--data_dir=data]
    (sections: train_step, loss, pipeline, streaming, device, diff, scaling)

Each measurement runs in its own fresh process (`--case`), one after another, so that peak
memory (the process's max RSS) and thread settings are its own; times are medians over
repeated calls after a warm-up. The machine is shared and noisy: read the ratios, not the
absolute times. Sections:

  train_step  the same dense RNN-T step (preset `small`: 3x256 LSTM, same batch of the first
              length bucket) in JAX (the project's jitted step: frontend + SpecAugment + fused
              loss + AdamW; also with autodiff's LSTM backward instead of
              `amnet.rnnt.lstm_recurrence`, the before/after of that fix) vs PyTorch eager and
              `torch.compile` (model compiled, loss eager; features precomputed, which favours
              PyTorch). Each case's model FLOPs per step (`amnet.rnnt.flops.train_step_flops`:
              the matmuls of forward and backward, no recomputation, no frontend) and their
              rate as a share of the machine's float32 matmul peak, measured in the same run
              (`peak`: a 2048^2 GEMM in JAX and PyTorch, float32 and bfloat16); for JAX, the
              count is checked against the compiled HLO's matmuls
              (`benchmarks.utilization.hlo_matmul_flops`). The LibriSpeech config's step
              (5x1024/640, V = 4,096; 2 utterances of 8 s, 40 wordpieces, float32) with the
              fused and the pruned loss, and PyTorch eager. Targets: JAX >= 1.5x the faster
              PyTorch variant and >= 50% of the f32 peak (small); pruned >= 3x the fused
              (LibriSpeech).
  loss        RNN-T loss + gradient: JAX materialized (naive) vs fused vs the plain-torch loss.
  pipeline    the grain pipeline's utterances/s (alone, and with host log-mel features) vs the
              JAX train step's consumption at the same batch. Target: >= 3x.
  streaming   batch-1 frame-by-frame decoding of the small dense model on one core: real-time
              factor (target <= 0.05); an AmNet (dense + lowrank(16)) with every frame forced
              to each branch: measured vs counted saving. Random weights (no run needed).
  device      batch-1 greedy recognition of the small dense model (random weights, features
              given) in the JAX streaming engine, the NumPy device runtime (float32 and int8
              weights) and onnxruntime fp32 / int8 (`amnet.device.onnx_model`), one thread each:
              ms per frame, RTF, and the resident memory the runtime added (model, compiled code,
              buffers: RSS after the run minus before loading; imports excluded).
  diff        neural diff: pack (top-k 10% budget) and apply (verify + apply + write) of the
              small and the paper-size (LibriSpeech 5x1024/640) model, MB/s of model file.
  scaling     the JAX step against batch size (first bucket) and against utterance length
              (the three buckets, batch 16).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from absl import app, flags

from benchmarks import models, utilization

SECTIONS = ("train_step", "loss", "pipeline", "streaming", "device", "diff", "scaling")
DEVICE_RUNTIMES = ("jax", "numpy", "numpy_int8", "onnx_fp32", "onnx_int8")
MIB = 1 << 20
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

_QUICK = flags.DEFINE_bool("quick", False, "Smaller shapes, fewer repeats (~3 minutes).")
_SECTIONS = flags.DEFINE_list("sections", list(SECTIONS), "Which sections, in order.")
_OUT = flags.DEFINE_string("out", "benchmarks/results.json", "Where the results go.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS dir holding spoken_commands/small_g0 "
                                "for the pipeline section (default: build the tiny corpus in a "
                                "temporary dir).")
_CASE = flags.DEFINE_string("case", None, "Internal: run one measurement, print its JSON.")
_ARGS = flags.DEFINE_string("args", "{}", "Internal: the case's arguments (JSON).")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_mib() -> float:
    """The process's resident memory now (Linux /proc)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf(
        "SC_PAGE_SIZE") / MIB


_timed = utilization.median_seconds


# -- cases (each runs in a fresh process) ---------------------------------------------------

def case_train_step_jax(batch: int, steps: int, hand_written_backward: bool = True,
                        bucket: int = 0, preset: str = "small", loss: str = "fused") -> dict:
    bench = models.TrainStep(batch, bucket, preset=preset, loss=loss,
                             lstm_backward="hand_written" if hand_written_backward else "autodiff")
    rss_before = _peak_rss_mib()
    start = time.perf_counter()
    bench.run()
    compile_s = time.perf_counter() - start
    seconds = _timed(bench.run, steps)
    peak_rss = _peak_rss_mib()
    counted = bench.flops()
    result = {"step_s": seconds, "utterances_per_s": batch / seconds, "compile_s": compile_s,
              "peak_rss_mib": peak_rss, "rss_before_mib": rss_before, "batch": batch,
              "frames": bench.frames, "labels": bench.labels, "model_flops": counted.model,
              "executed_flops": counted.executed}
    try:  # the cross-check compiles the step again, after timing; its failure keeps the times
        result["hlo_flops"] = bench.hlo_flops()
    except ValueError as e:
        result["hlo_error"] = str(e)
    return result


def case_train_step_torch(batch: int, steps: int, compile: bool = False,
                          preset: str = "small") -> dict:
    import jax
    import torch

    from amnet import build
    from amnet.rnnt import flops, frontend
    from amnet.torch_baselines.model import TorchTransducer
    from amnet.torch_baselines.rnnt_loss import rnnt_loss

    config, vocab = models.step_config(batch, preset)
    front, _ = build.frontend_configs(config)
    data = models.synthetic_batch(config.data.buckets[0], batch, vocab)
    features, lengths = jax.jit(lambda a, n: frontend.featurize(a, n, front))(
        data["audio"], data["audio_lengths"])
    feats = torch.from_numpy(jax.device_get(features).copy())
    lens = torch.from_numpy(jax.device_get(lengths).astype("int64"))
    tokens = torch.from_numpy(data["tokens"].astype("int64"))
    token_lengths = torch.from_numpy(data["token_lengths"].astype("int64"))
    torch.manual_seed(0)
    model_config = build.model_config(config, vocab)
    model = TorchTransducer(model_config)
    trained = [p for p in model.parameters() if p.requires_grad]
    adamw = torch.optim.AdamW(trained, lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-6)
    forward = torch.compile(model) if compile else model
    rss_before = _peak_rss_mib()

    def run():
        costs = rnnt_loss(forward(feats, lens, tokens, token_lengths), lens, tokens,
                          token_lengths)
        loss = costs.mean()
        adamw.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        adamw.step()

    start = time.perf_counter()
    try:
        run()
    except Exception as e:  # torch.compile needs a C++ toolchain; report, do not hide
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    compile_s = time.perf_counter() - start
    seconds = _timed(run, steps)
    # What the step trains: the RNN-T loss only (the twin's CTC head is not in its loss).
    counted = flops.train_step_flops(model_config, batch, feats.shape[1], tokens.shape[1],
                                     ctc=False)
    return {"step_s": seconds, "utterances_per_s": batch / seconds, "compile_s": compile_s,
            "peak_rss_mib": _peak_rss_mib(), "rss_before_mib": rss_before,
            "threads": torch.get_num_threads(), "model_flops": counted.model}


def case_peak(framework: str, dtype: str, n: int, repeats: int) -> dict:
    """The machine's matmul peak as `framework` reaches it: an `[n, n] @ [n, n]` product."""
    measure = {"jax": utilization.matmul_peak_jax,
               "torch": utilization.matmul_peak_torch}[framework]
    return measure(n, dtype, repeats)


def _loss_inputs(b: int, t: int, u: int, v: int, h: int):
    import numpy as np

    rng = np.random.default_rng(0)
    f32 = np.float32
    return (rng.normal(size=(b, t, h)).astype(f32), rng.normal(size=(b, u + 1, h)).astype(f32),
            (rng.normal(size=(h, v)) * h**-0.5).astype(f32), np.zeros(v, f32),
            rng.integers(1, v, (b, u)).astype(np.int32))


def case_loss(variant: str, b: int, t: int, u: int, v: int, h: int, repeats: int) -> dict:
    enc, pred, kernel, bias, targets = _loss_inputs(b, t, u, v, h)
    if variant == "torch":
        import torch

        from amnet.torch_baselines.rnnt_loss import rnnt_loss

        tensors = [torch.from_numpy(x).requires_grad_() for x in (enc, pred, kernel, bias)]
        tgt = torch.from_numpy(targets.astype("int64"))
        lengths, target_lengths = torch.full((b,), t), torch.full((b,), u)
        rss_before = _peak_rss_mib()

        def run():
            for x in tensors:
                x.grad = None
            e, p, w, c = tensors
            logits = torch.tanh(e[:, :, None] + p[:, None]) @ w + c
            rnnt_loss(logits, lengths, tgt, target_lengths).sum().backward()

        seconds = _timed(run, repeats)
        return {"seconds": seconds, "peak_rss_mib": _peak_rss_mib(),
                "rss_before_mib": rss_before}
    import jax
    import jax.numpy as jnp

    from amnet.rnnt import loss as rnnt

    lengths, target_lengths = jnp.full((b,), t), jnp.full((b,), u)
    if variant == "jax_naive":
        def loss(*joint):
            return rnnt.rnnt_loss(rnnt.joint_logits(*joint), lengths, targets,
                                  target_lengths).sum()
    else:
        def loss(*joint):
            return rnnt.rnnt_loss_fused(*joint, lengths, targets, target_lengths,
                                        frames_per_chunk=1).sum()
    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
    args = tuple(jnp.asarray(x) for x in (enc, pred, kernel, bias))
    temp = grad.lower(*args).compile().memory_analysis().temp_size_in_bytes
    rss_before = _peak_rss_mib()
    seconds = _timed(lambda: jax.block_until_ready(grad(*args)), repeats)
    return {"seconds": seconds, "peak_rss_mib": _peak_rss_mib(), "rss_before_mib": rss_before,
            "xla_temp_mib": temp / MIB}


def case_pipeline(batch: int, batches: int, data_dir: str | None) -> dict:
    import jax

    from amnet import build
    from amnet.data import datasets, input_pipeline
    from amnet.data.corpus import spoken_commands
    from amnet.data.text import CharTokenizer
    from amnet.rnnt import frontend

    config, _ = models.step_config(batch)
    if data_dir and input_pipeline.prepared_dir("spoken_commands/small_g0", data_dir):
        config.data.data_dir, corpus = data_dir, "small_g0"
    else:
        data_dir = tempfile.mkdtemp(prefix="bench_tfds_")
        spoken_commands.make_builder("tiny", 0, data_dir=data_dir, seed=7,
                                     num_workers=1).download_and_prepare()
        config.data.name, config.data.data_dir = "spoken_commands/tiny_g0_s7", data_dir
        corpus = "tiny_g0 (built for the benchmark)"
    tokenizer = CharTokenizer()
    source = datasets.open_dataset(config, "train")
    pipe = datasets.pipeline_config(config, batch_size=batch, train=True)
    report = input_pipeline.scan(source, tokenizer, pipe)
    front, _ = build.frontend_configs(config)
    featurize = jax.jit(lambda a, n: frontend.featurize(a, n, front))
    out = {"corpus": corpus, "threads": config.data.num_threads}
    for name, with_features in (("grain", False), ("grain+features", True)):
        iterator = iter(input_pipeline.make_dataset(source, tokenizer, report, pipe))
        first = next(iterator)  # start the workers, compile the featurizer
        if with_features:
            jax.block_until_ready(featurize(first["audio"], first["audio_lengths"]))
        start = time.perf_counter()
        utterances = 0.0
        for _ in range(batches):
            b = next(iterator)
            if with_features:
                jax.block_until_ready(featurize(b["audio"], b["audio_lengths"]))
            utterances += float(b["weights"].sum())
        out[name] = utterances / (time.perf_counter() - start)
    return out


def case_streaming(utterances: int, frames: int) -> dict:
    import jax
    import numpy as np

    from amnet.amortized import streaming
    from amnet.amortized.costs import frame_costs
    from benchmarks.models import fresh_model

    dense, dense_params = fresh_model("single-dense")
    amnet, amnet_params = fresh_model("lowrank")
    rng = np.random.default_rng(0)
    feats = [rng.normal(-3.0, 4.0, size=(frames, dense.config.input_dim)).astype(np.float32)
             for _ in range(utterances)]
    out = {"frame_period_s": dense.config.frame_period_s}
    recognizers = {"dense": streaming.StreamingRecognizer(dense, dense_params)}
    # Force the arbitrator: a huge output bias on branch k's logit routes every frame there.
    for k in range(2):
        params = jax.tree.map(np.asarray, amnet_params)
        bias = np.zeros_like(params["encoder"]["arbitrator"]["b2"])
        bias[k] = 1e4
        params["encoder"]["arbitrator"] = {**params["encoder"]["arbitrator"], "b2": bias}
        recognizers[f"amnet_branch_{k}"] = streaming.StreamingRecognizer(amnet, params)
    seconds = {name: [] for name in recognizers}
    routed = {name: [] for name in recognizers}
    for i, f in enumerate(feats):
        order = list(recognizers) if i % 2 == 0 else list(recognizers)[::-1]
        for name in order:
            result = recognizers[name].run(f)
            seconds[name].append(result.frame_seconds)
            routed[name].append(result.branches)
    for name in recognizers:
        s = np.concatenate(seconds[name])
        out[name] = {"ms_per_frame": 1e3 * float(s.mean()),
                     "rtf": float(s.mean()) / dense.config.frame_period_s,
                     "branches": sorted({int(b) for b in np.concatenate(routed[name])})}
    costs = frame_costs(amnet.config).per_branch
    out["counted_mflops"] = [c / 1e6 for c in costs]
    return out


def case_diff(preset: str) -> dict:
    import numpy as np

    from neuraldiff import model_file, package, posthoc, tree, updates

    params = _random_params(preset)
    base = updates.flat(params)
    names = tree.Selector().names(params)
    rng = np.random.default_rng(1)
    new = {n: v + (rng.normal(size=v.shape) * 1e-3).astype(np.float32) if n in names else v
           for n, v in base.items()}
    model_bytes = updates.model_bytes(base)
    budget = updates.budget_bytes(base, 0.1)
    start = time.perf_counter()
    contents = posthoc.topk_delta(base, new, names, budget)
    select_s = time.perf_counter() - start
    start = time.perf_counter()
    data, _ = package.pack("topk", contents, base, budget_bytes=budget)
    pack_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        model_file.save(path, base)
        start = time.perf_counter()
        model_file.apply_to_file(path, data)
        apply_s = time.perf_counter() - start
    return {"parameters": int(sum(v.size for v in base.values())), "model_mib": model_bytes / MIB,
            "package_mib": len(data) / MIB, "topk_select_s": select_s, "pack_s": pack_s,
            "apply_s": apply_s, "apply_mib_per_s": model_bytes / MIB / apply_s,
            "peak_rss_mib": _peak_rss_mib()}


def _random_params(preset: str):
    import jax
    import numpy as np

    from amnet import build
    from experiments.configs import baseline, librispeech

    config = (librispeech.get_config("full") if preset == "librispeech"
              else baseline.get_config(preset))
    vocab = config.data.get("vocab_size") or models.CHARACTERS
    model = build.model(config, vocab)
    frames = 4
    return jax.device_get(model.init(
        jax.random.key(0), np.zeros((1, frames, model.config.input_dim), np.float32),
        np.array([frames]), np.ones((1, 2), np.int32), np.array([2]))["params"])


# -- the runner ---------------------------------------------------------------------------

def case_device(runtime: str, model_path: str, utterances: int, frames: int) -> dict:
    """Batch-1 greedy recognition, frame by frame, of the small dense model (random weights,
    features given: the frontend excluded) in one runtime: `jax` (`amnet.amortized.streaming`),
    `numpy` / `numpy_int8` (`amnet.device`, float32 / int8 weights), `onnx_fp32` / `onnx_int8`
    (onnxruntime, `amnet.device.onnx_model`)."""
    import numpy as np

    rss_before = _rss_mib()
    rng = np.random.default_rng(0)
    if runtime == "jax":
        from amnet.amortized import streaming
        from benchmarks.models import fresh_model

        model, params = fresh_model("single-dense")
        recognizer = streaming.StreamingRecognizer(model, params)
        dim, period = model.config.input_dim, model.config.frame_period_s

        def run(feats):
            return recognizer.run(feats).tokens
    else:
        from amnet.device.recognizer import Recognizer

        if runtime.startswith("numpy"):
            recognizer = Recognizer.load(model_path, int8=runtime == "numpy_int8")
        else:
            from amnet.device.onnx_model import OnnxNetwork

            network = OnnxNetwork(Path(model_path).parent / runtime.removeprefix("onnx_"))
            recognizer = Recognizer(network.spec, network=network)
        dim = recognizer.spec.model["input_dim"]
        period = recognizer.spec.model["frame_period_s"]

        def run(feats):
            stream = recognizer.stream()
            for frame in feats:
                stream.accept_frame(frame)
            return stream.finish().tokens

    feats = [rng.normal(-3.0, 4.0, size=(frames, dim)).astype(np.float32)
             for _ in range(utterances + 1)]
    run(feats[0])  # warm-up (JAX: compilation)
    start = time.perf_counter()
    tokens = [len(run(f)) for f in feats[1:]]
    seconds = (time.perf_counter() - start) / (utterances * frames)
    return {"ms_per_frame": 1e3 * seconds, "rtf": seconds / period,
            "tokens_per_utterance": float(np.mean(tokens)),
            "runtime_mib": _rss_mib() - rss_before}


def _device_model(out_dir: Path) -> str:
    """The small dense model of the streaming section (random weights, seed 0) as a device
    model file, with its ONNX graphs (fp32/, int8/) beside it; returns the file's path."""
    from amnet import export
    from amnet.device import onnx_model
    from amnet.rnnt import cmvn
    from benchmarks.models import fresh_model
    from experiments.configs import amnet as amnet_config
    from neuraldiff import model_file, updates

    _, params = fresh_model("single-dense")
    config = cmvn.unit_stats(amnet_config.get_config("small,single-dense"))
    path = out_dir / "device.safetensors"
    model_file.save(path, updates.flat(params), metadata=export.device_metadata(config))
    onnx_model.quantize(onnx_model.export(path, out_dir / "fp32"), out_dir / "int8")
    return str(path)


CASES = {"train_step_jax": case_train_step_jax, "train_step_torch": case_train_step_torch,
         "peak": case_peak, "loss": case_loss, "pipeline": case_pipeline,
         "streaming": case_streaming, "device": case_device, "diff": case_diff}


def run_case(name: str, env: dict | None = None, **kwargs) -> dict:
    """One case in a fresh process; its JSON result (or the error it died with)."""
    command = [sys.executable, "-m", "benchmarks.run", f"--case={name}",
               f"--args={json.dumps(kwargs)}"]
    out = subprocess.run(command, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return {"error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def machine() -> dict:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1),
            "python": platform.python_version(), "jax": jax.__version__, "torch": torch_version,
            "backend": jax.default_backend()}


def sizes(quick: bool) -> dict:
    if quick:
        return {"batch": 8, "steps": 3, "peak_n": 1024, "librispeech_batch": 1,
                "librispeech_steps": 1, "loss": dict(b=4, t=100, u=30, v=256, h=128, repeats=2),
                "batches": 10, "utterances": 2, "frames": 100, "diff": ("small",),
                "scaling_batches": (4, 8)}
    return {"batch": 32, "steps": 5, "peak_n": 2048, "librispeech_batch": 2,
            "librispeech_steps": 2, "loss": dict(b=8, t=200, u=50, v=512, h=256, repeats=3),
            "batches": 40, "utterances": 6, "frames": 200, "diff": ("small", "librispeech"),
            "scaling_batches": (8, 16, 32, 64)}


def run_sections(sections: Sequence[str], quick: bool, data_dir: str | None) -> dict:
    s = sizes(quick)
    results: dict = {"machine": machine(), "quick": quick,
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for section in sections:
        print(f"-- {section}", flush=True)
        if section == "train_step":
            results[section] = {
                "jax": run_case("train_step_jax", batch=s["batch"], steps=s["steps"]),
                "jax_autodiff_lstm": run_case("train_step_jax", batch=s["batch"],
                                              steps=s["steps"], hand_written_backward=False),
                "torch_eager": run_case("train_step_torch", batch=s["batch"], steps=s["steps"]),
                "torch_compile": run_case("train_step_torch", batch=s["batch"],
                                          steps=s["steps"], compile=True)}
            results["peak"] = {f"{f} {d}": run_case("peak", framework=f, dtype=d,
                                                    n=s["peak_n"], repeats=s["steps"])
                               for f in ("jax", "torch") for d in ("float32", "bfloat16")}
            ls = dict(batch=s["librispeech_batch"], steps=s["librispeech_steps"],
                      preset="librispeech")
            results["train_step_librispeech"] = {
                "jax": run_case("train_step_jax", **ls),
                "jax_pruned": run_case("train_step_jax", loss="pruned", **ls),
                "torch_eager": run_case("train_step_torch", **ls)}
        elif section == "loss":
            results[section] = {"shape": s["loss"], **{
                v: run_case("loss", variant=v, **s["loss"])
                for v in ("jax_naive", "jax_fused", "torch")}}
        elif section == "pipeline":
            train = (results.get("train_step", {}).get("jax")
                     or run_case("train_step_jax", batch=s["batch"], steps=s["steps"]))
            results[section] = {**run_case("pipeline", batch=s["batch"], batches=s["batches"],
                                           data_dir=data_dir),
                                "train_step_utterances_per_s": train.get("utterances_per_s")}
        elif section == "streaming":
            results[section] = run_case("streaming", env={"XLA_FLAGS": SINGLE_THREAD},
                                        utterances=s["utterances"], frames=s["frames"])
        elif section == "device":
            with tempfile.TemporaryDirectory() as tmp:
                path = _device_model(Path(tmp))
                one_thread = {"XLA_FLAGS": SINGLE_THREAD, "OMP_NUM_THREADS": "1",
                              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                results[section] = {
                    runtime: run_case("device", env=one_thread, runtime=runtime,
                                      model_path=path, utterances=s["utterances"],
                                      frames=s["frames"])
                    for runtime in DEVICE_RUNTIMES}
        elif section == "diff":
            results[section] = {p: run_case("diff", preset=p) for p in s["diff"]}
        elif section == "scaling":
            results[section] = {
                "batch": {b: run_case("train_step_jax", batch=b, steps=s["steps"])
                          for b in s["scaling_batches"]},
                "bucket": {k: run_case("train_step_jax", batch=16, steps=s["steps"], bucket=k)
                           for k in range(3)}}
        else:
            raise app.UsageError(f"unknown section {section!r}; choose from {SECTIONS}")
    return results


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def _table(header: Sequence[str], rows: Sequence[tuple[str, dict]],
           cells: Callable[[dict], Sequence[str]]) -> list[str]:
    """A markdown table: one row per (name, measurement); a failed case shows its error."""
    lines = ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, v in rows:
        body = ([f"failed: {v['error']}"] + [""] * (len(header) - 2) if "error" in v
                else list(cells(v)))
        lines.append("| " + " | ".join([str(name), *body]) + " |")
    return lines


def _train_step_cells(jax_rate: float | None, peak: float | None):
    def cells(v: dict) -> list[str]:
        achieved = v.get("model_flops") and v["model_flops"] / v["step_s"]
        return [f"{1e3 * v['step_s']:.0f}", f"{v['utterances_per_s']:.1f}",
                f"{v['compile_s']:.1f}", f"{v['peak_rss_mib']:.0f}",
                f"{_fmt(jax_rate and jax_rate / v['utterances_per_s'], '.2f')}x",
                _fmt(v.get("model_flops") and v["model_flops"] / 1e9),
                _fmt(achieved and achieved / 1e9),
                f"{_fmt(achieved and peak and 100 * achieved / peak)}%"]
    return cells


TRAIN_STEP_HEADER = ("ms/step", "utterances/s", "compile s", "peak RSS MiB", "JAX speed vs it",
                     "model GFLOP/step", "GFLOP/s", "of f32 peak")


def f32_peak(r: dict) -> float | None:
    """The machine's float32 matmul peak: the faster of the JAX and PyTorch GEMMs."""
    rates = [v["flops_per_s"] for k, v in r.get("peak", {}).items()
             if k.endswith("float32") and "error" not in v]
    return max(rates) if rates else None


def _train_step_tables(r: dict, targets: dict) -> list[str]:
    lines = []
    peak = f32_peak(r)
    if "peak" in r:
        lines += _table(("matmul peak, [n, n] @ [n, n]", "n", "GFLOP/s", "vs f32 peak"),
                        list(r["peak"].items()),
                        lambda v: [str(v["n"]), f"{v['flops_per_s'] / 1e9:.1f}",
                                   f"{_fmt(peak and v['flops_per_s'] / peak, '.2f')}x"])
    for key, title in (("train_step", "train step (small, dense)"),
                       ("train_step_librispeech", "train step (LibriSpeech config, f32)")):
        if key not in r:
            continue
        t = r[key]
        jax_rate = t["jax"].get("utterances_per_s")
        shape = next((f"batch {v['batch']}, {v['frames']} frames, {v['labels']} labels"
                      for v in t.values() if "frames" in v and "labels" in v), "")
        lines += _table((f"{title}{': ' + shape if shape else ''}", *TRAIN_STEP_HEADER),
                        list(t.items()), _train_step_cells(jax_rate, peak))
        checks = [f"{n} {v['hlo_flops'] / v['executed_flops']:.4f}" if "hlo_flops" in v
                  else f"{n} not counted ({v['hlo_error']})" for n, v in t.items()
                  if "hlo_flops" in v or "hlo_error" in v]
        if checks:
            lines.append("\nmatmul FLOPs in the compiled HLO / counted (amnet.rnnt.flops, with the "
                         "frontend and recomputation): " + ", ".join(checks))
        torch_rates = [v["utterances_per_s"] for k, v in t.items()
                       if k.startswith("torch") and "error" not in v]
        if key == "train_step" and jax_rate and torch_rates:
            targets["train_step: JAX >= 1.5x the faster PyTorch"] = (
                jax_rate / max(torch_rates), jax_rate >= 1.5 * max(torch_rates))
        if key == "train_step" and peak and t["jax"].get("model_flops"):
            share = t["jax"]["model_flops"] / t["jax"]["step_s"] / peak
            targets["train_step: JAX >= 50% of the f32 matmul peak (model FLOPs)"] = (
                share, share >= 0.5)
        pruned = t.get("jax_pruned", {}).get("step_s")
        if key == "train_step_librispeech" and pruned and t["jax"].get("step_s"):
            speedup = t["jax"]["step_s"] / pruned
            targets["LibriSpeech step: pruned loss >= 3x faster than the fused"] = (
                speedup, speedup >= 3)
    return lines


def report(r: dict) -> tuple[str, dict]:
    """The markdown tables and the targets (met or not) of a results dict."""
    targets: dict[str, tuple[float, bool]] = {}
    m = r["machine"]
    lines = [f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; JAX {m['jax']}, "
             f"PyTorch {m['torch']}; {'quick' if r['quick'] else 'full'} run, {r['date']}"]
    lines += _train_step_tables(r, targets)
    if "loss" in r:
        lo = r["loss"]
        naive = lo["jax_naive"].get("seconds")
        lines += _table(
            (f"RNN-T loss + grad {lo['shape']}", "s", "peak RSS - before (MiB)", "XLA temp MiB",
             "time vs JAX naive"), [(n, lo[n]) for n in ("jax_naive", "jax_fused", "torch")],
            lambda v: [f"{v['seconds']:.3f}", f"{v['peak_rss_mib'] - v['rss_before_mib']:.0f}",
                       _fmt(v.get("xla_temp_mib")),
                       f"{_fmt(naive and v['seconds'] / naive, '.2f')}x"])
    if "pipeline" in r:
        p = r["pipeline"]
        step = p.get("train_step_utterances_per_s")
        rates = [(n, {"rate": p[n]}) for n in ("grain", "grain+features") if n in p]
        rates += [("JAX train step", {"rate": step})] if step else []
        lines += _table((f"input pipeline ({p.get('corpus')})", "utterances/s", "vs train step"),
                        [("failed", p)] if "error" in p else rates,
                        lambda v: [f"{v['rate']:.1f}", f"{_fmt(step and v['rate'] / step)}x"])
        if step and "grain+features" in p:
            ratio = p["grain+features"] / step
            targets["pipeline: >= 3x the train step"] = (ratio, ratio >= 3)
    if "streaming" in r:
        st = r["streaming"]
        names = ("dense", "amnet_branch_0", "amnet_branch_1")
        lines += _table(("streaming, batch 1, one core", "ms/frame (30 ms)", "RTF"),
                        [("streaming", st)] if "error" in st else [(n, st[n]) for n in names],
                        lambda v: [f"{v['ms_per_frame']:.3f}", f"{v['rtf']:.4f}"])
        if "error" not in st:
            targets["streaming: RTF <= 0.05 (small dense, one core)"] = (
                st["dense"]["rtf"], st["dense"]["rtf"] <= 0.05)
            c0, c1 = st["counted_mflops"]
            counted = 1 - c1 / c0
            measured = 1 - st["amnet_branch_1"]["ms_per_frame"] / st["amnet_branch_0"][
                "ms_per_frame"]
            lines.append(f"\nAmNet low-rank branch vs dense branch: counted saving "
                         f"{100 * counted:.1f}% ({c1:.2f} vs {c0:.2f} MFLOPs), measured "
                         f"{100 * measured:.1f}% -> measured / counted {measured / counted:.2f}")
            targets["streaming: AmNet measured >= 0.7 x counted saving"] = (
                measured / counted, measured / counted >= 0.7)
    if "device" in r:
        d = r["device"]
        jax_ms = d["jax"].get("ms_per_frame")
        lines += _table(("batch-1 greedy, one thread (small dense, random weights)",
                         "ms/frame (30 ms)", "RTF", "speed vs JAX", "runtime MiB"),
                        list(d.items()),
                        lambda v: [f"{v['ms_per_frame']:.3f}", f"{v['rtf']:.4f}",
                                   f"{_fmt(jax_ms and jax_ms / v['ms_per_frame'], '.2f')}x",
                                   f"{v['runtime_mib']:.0f}"])
    if "diff" in r:
        lines += _table(
            ("neural diff (top-k, 10% budget)", "parameters", "model MiB", "package MiB",
             "top-k s", "pack s", "apply s", "apply MiB/s"), list(r["diff"].items()),
            lambda v: [f"{v['parameters']:,}", f"{v['model_mib']:.1f}", f"{v['package_mib']:.2f}",
                       f"{v['topk_select_s']:.2f}", f"{v['pack_s']:.2f}", f"{v['apply_s']:.2f}",
                       f"{v['apply_mib_per_s']:.0f}"])
    if "scaling" in r:
        sc = r["scaling"]
        rows = [(f"batch {b}", v) for b, v in sc["batch"].items()]
        rows += [(f"bucket {k}, batch 16", v) for k, v in sc["bucket"].items()]
        lines += _table(("JAX train step scaling (small)", "frames", "ms/step", "utterances/s",
                         "us per utterance-frame"), rows,
                        lambda v: [str(v["frames"]), f"{1e3 * v['step_s']:.0f}",
                                   f"{v['utterances_per_s']:.1f}",
                                   f"{1e6 * v['step_s'] / (v['batch'] * v['frames']):.0f}"])
    if targets:
        lines += ["", "| target | measured | met |", "|---|---:|---|"]
        for name, (value, met) in targets.items():
            lines.append(f"| {name} | {value:.3f} | {'yes' if met else 'no'} |")
    return "\n".join(lines), {k: {"measured": v, "met": bool(m)} for k, (v, m) in targets.items()}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CASE.value:
        if _CASE.value not in CASES:
            raise app.UsageError(f"unknown case {_CASE.value!r}")
        print(json.dumps(CASES[_CASE.value](**json.loads(_ARGS.value))))
        return
    unknown = sorted(set(_SECTIONS.value) - set(SECTIONS))
    if unknown:
        raise app.UsageError(f"unknown sections {unknown}; choose from {SECTIONS}")
    start = time.perf_counter()
    results = run_sections(_SECTIONS.value, _QUICK.value, _DATA_DIR.value)
    table, targets = report(results)
    results["targets"] = targets
    results["seconds"] = time.perf_counter() - start
    Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    Path(_OUT.value).write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\nwrote {_OUT.value} ({results['seconds'] / 60:.1f} minutes)")


if __name__ == "__main__":
    app.run(main)
