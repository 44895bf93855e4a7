r"""The device runtime (`amnet.device`) on one core: parity with JAX, real-time factor, and
AmNet's measured against its counted saving.

    python -m benchmarks.device --run_dir=runs/demo [--data_dir=data] [--utterances=300] [--onnx]
    python -m benchmarks.device --run_dir=runs/demo --data_dir=data --sherpa
    python -m benchmarks.device                    # the branch costs alone

1. With --run_dir: every utterance of the run's test split through the device runtime (greedy,
   beam, beam + LM, as the run's test decoding), against the transcripts JAX wrote in the run's
   outputs.jsonl: how many are identical, the WER of each, and the real-time factor (compute
   seconds per second of audio, features included); float32 weights, and int8 weights with
   per-column scales (`kernels.Int8`; bytes with the matrices int8). With --onnx, also the
   model exported to ONNX (`amnet.device.onnx_model`) and run by onnxruntime, float32 and
   dynamic int8, in the same search code (one intra-op thread).
   With --sherpa instead: the run in sherpa-onnx's layout (`amnet.device.sherpa_layout`), every
   test utterance through sherpa-onnx's own recognizer, against JAX's greedy transcripts.
2. Branch costs: per 30 ms frame (features excluded), the `small` encoder's dense branch
   against lowrank(16), sparse(0.9) (CSR) and sparse(0.9,8x64) (balanced blocks) branches
   (random weights; every frame forced to one
   branch, the joint forced to blank), measured saving 1 - t_k / t_dense next to the counted
   1 - C_k / C_dense (`amnet.amortized.costs`). Target: measured >= 0.9x counted.

One thread (the BLAS thread variables are set before NumPy loads), medians over repeats; the
two encoders of a comparison are timed in alternation, so that both see the same machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from amnet.data import datasets  # noqa: E402
from amnet.data.text import CHAR_VOCAB_SIZE  # noqa: E402
from amnet.device import search  # noqa: E402
from amnet.device.kernels import DENSE  # noqa: E402
from amnet.device.network import Network  # noqa: E402
from amnet.device.recognizer import Recognizer  # noqa: E402
from amnet.device.spec import DeviceSpec  # noqa: E402
from amnet.evaluation import shallow_fusion  # noqa: E402
from amnet.rnnt.flops import LinearSpec, block_grid  # noqa: E402
from amnet.training import rundir  # noqa: E402


def _trained(run_dir: Path, data_dir: str | None):
    """A finished run's config, device spec, flat parameters, and the JAX engine's test
    transcripts by utterance id (its outputs.jsonl)."""
    from amnet import export
    from amnet.training import checkpointing
    from neuraldiff import updates

    config = rundir.read_run_config(run_dir, data_dir)
    jax_rows = {r["id"]: r for r in map(json.loads, (run_dir / "outputs.jsonl").read_text()
                                        .splitlines())}
    return (config, export.device_spec(config),
            updates.flat(checkpointing.load_params(run_dir)[0]), jax_rows)


def _model_file(spec: DeviceSpec, params: dict, out_dir: Path) -> Path:
    """The model as a device model file in `out_dir` (what the exports read)."""
    from amnet.device.spec import METADATA_KEY
    from neuraldiff import model_file

    path = out_dir / "device.safetensors"
    model_file.save(path, params, metadata={METADATA_KEY: spec.to_json()})
    return path


def _against_jax(transcribe, decoder: str, config, jax_rows: dict, utterances: int,
                 sample_rate: int) -> tuple[int, int, float, float, float]:
    """The first `utterances` of the test split through `transcribe(speech) -> text` against
    the JAX engine's `decoder` transcripts: (utterances, identical, WER, JAX WER, RTF)."""
    import jiwer

    source = datasets.open_dataset(config, config.data.test_split)
    count = min(utterances, len(source))
    same, refs, hyps, jax_hyps, compute, audio_s = 0, [], [], [], 0.0, 0.0
    for i in range(count):
        example = source[i]
        uid = example["id"].decode() if isinstance(example["id"], bytes) else example["id"]
        start = time.perf_counter()
        text = transcribe(example["speech"])
        compute += time.perf_counter() - start
        audio_s += example["speech"].shape[0] / sample_rate
        expected = jax_rows[uid]
        same += text == expected[decoder]
        refs.append(expected["reference"])
        hyps.append(text)
        jax_hyps.append(expected[decoder])
    wer, jax_wer = (jiwer.wer(refs, [h or "<empty>" for h in x]) for x in (hyps, jax_hyps))
    return count, same, wer, jax_wer, compute / audio_s


def _onnx_networks(spec: DeviceSpec, params: dict, out_dir: Path) -> dict:
    """onnxruntime networks of the model, float32 and dynamic int8 (`amnet.device.onnx_model`),
    with their graphs' bytes."""
    from amnet.device import onnx_model

    path = _model_file(spec, params, out_dir)
    fp32 = onnx_model.export(path, out_dir / "fp32")
    int8 = onnx_model.quantize(fp32, out_dir / "int8")
    return {name: (onnx_model.OnnxNetwork(d),
                   sum((d / f"{g}.onnx").stat().st_size for g in onnx_model.GRAPHS))
            for name, d in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8))}


def parity(run_dir: Path, data_dir: str | None, utterances: int,
           onnx_dir: Path | None = None) -> list[str]:
    """With `onnx_dir`, the same for the ONNX graphs run by onnxruntime (fp32, int8)."""
    from amnet.rnnt import lm
    from neuraldiff import updates

    config, spec, params, jax_rows = _trained(run_dir, data_dir)
    fusion = search.Fusion.of([lm.load(run_dir / shallow_fusion.LM_FILE)], [config.lm.weight],
                              config.lm.length_bonus)
    bound = {"max_length": spec.max_length}  # the JAX decoders' label bound
    size = updates.model_bytes(params)
    # One network per runtime, shared by its three recognizers; bytes: the model file's, with
    # the matrices as that network stores them.
    networks = {"numpy": Network(spec, params), "numpy int8": Network(spec, params, int8=True)}
    float_matrices = networks["numpy"].weight_bytes()
    runtimes = {name: ({"network": net}, size - float_matrices + net.weight_bytes())
                for name, net in networks.items()}
    if onnx_dir is not None:
        runtimes.update({name: ({"network": network}, size) for name, (network, size)
                         in _onnx_networks(spec, params, onnx_dir).items()})
    recognizers = []
    for runtime, (model, _) in runtimes.items():
        recognizers += [
            ("greedy", runtime, Recognizer(spec, **model, **bound)),
            ("beam", runtime, Recognizer(spec, **model, beam=config.eval.beam, **bound)),
            ("beam_lm", runtime, Recognizer(spec, **model, beam=config.lm.beam, fusion=fusion,
                                            **bound))]
    rows = ["| decoder | runtime (model bytes) | utterances | identical to JAX | WER device "
            "| WER JAX | RTF |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, runtime, recognizer in recognizers:
        count, same, device_wer, jax_wer, rtf = _against_jax(
            lambda speech, r=recognizer: r.transcribe(speech).text, name, config, jax_rows,
            utterances, recognizer.sample_rate)
        rows.append(f"| {name} | {runtime} ({runtimes[runtime][1]:,}) | {count} | {same} | "
                    f"{device_wer:.2%} | {jax_wer:.2%} | {rtf:.4f} |")
    return rows


def sherpa(run_dir: Path, data_dir: str | None, utterances: int, out_dir: Path,
           train_utterances: int, repeats: tuple[int, ...] = (1, 2, 5)) -> list[str]:
    """The run exported in sherpa-onnx's layout (`amnet.device.sherpa_layout`) and every test
    utterance through sherpa-onnx's own recognizer (greedy, one thread), at most r labels per
    encoder frame for each r in `repeats`, against the JAX engine's greedy transcripts. The
    encoder graph's fbank statistics come from the first `train_utterances` of the training
    split; an LSTM predictor's window holds `max_length` + 1 labels (every hypothesis the JAX
    decoder can produce: exact)."""
    from amnet.device import features, sherpa_layout

    config, spec, params, jax_rows = _trained(run_dir, data_dir)
    path = _model_file(spec, params, out_dir)
    train = datasets.open_dataset(config, config.data.train_split)
    stats = sherpa_layout.fbank_statistics(
        (features.to_float(train[i]["speech"]) for i in range(min(train_utterances,
                                                                    len(train)))),
        spec.frontend)
    context = None if spec.model["predictor"] == "stateless" else spec.max_length + 1
    rows = [f"fbank statistics: {stats['frames']:,} frames of {min(train_utterances, len(train))}"
            " training utterances", "",
            "| decoder | runtime | utterances | identical to JAX greedy | WER sherpa-onnx "
            f"| WER JAX greedy (<= {config.eval.max_symbols_per_frame} labels/frame) | RTF |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for repeat in repeats:
        directory = sherpa_layout.export(path, out_dir / f"sherpa_r{repeat}", stats,
                                         context=context, repeat=repeat)
        recognizer = sherpa_layout.SherpaRecognizer(directory)
        count, same, wer, jax_wer, rtf = _against_jax(
            lambda speech, r=recognizer: r.transcribe(speech)[0], "greedy", config, jax_rows,
            utterances, recognizer.sample_rate)
        rows.append(f"| greedy, <= {repeat} label(s)/frame | sherpa-onnx {_sherpa_version()} | "
                    f"{count} | {same} | {wer:.2%} | {jax_wer:.2%} | {rtf:.4f} |")
    return rows


def _sherpa_version() -> str:
    import sherpa_onnx

    return getattr(sherpa_onnx, "__version__", "")


def _branch_model(fast: str, rng: np.random.Generator):
    """A `small`-size AmNet (dense + `fast`) with random weights, as flat params and a spec."""
    from amnet.rnnt import frontend

    vocab = CHAR_VOCAB_SIZE
    model = {"vocab_size": vocab, "input_dim": 240, "encoder_layers": 3, "encoder_hidden": 256,
             "encoder_projection": None, "embed_dim": 64, "predictor": "lstm",
             "predictor_context": 2, "predictor_layers": 1, "predictor_hidden": 256,
             "joint_dim": 256, "blank": 0, "encoder_branches": ["dense", fast],
             "arbitrator_hidden": 16, "frame_period_s": 0.03, "processor_flops": 1e8}
    params = {}

    def weight(name, shape, spec=DENSE):
        if spec.kind == "lowrank":
            params[f"{name}_u"] = rng.normal(0, 0.1, (shape[0], spec.rank)).astype(np.float32)
            params[f"{name}_v"] = rng.normal(0, 0.1, (spec.rank, shape[1])).astype(np.float32)
            return
        w = rng.normal(0, 0.1, shape).astype(np.float32)
        if spec.kind == "sparse" and spec.block:  # k random blocks in each output group
            blocks, kept, groups = block_grid(*shape, spec)
            live = np.argsort(rng.random((blocks, groups)), axis=0) < kept
            w *= np.repeat(np.repeat(live, spec.block[0], 0), spec.block[1], 1)
        elif spec.kind == "sparse":
            w[rng.random(shape) < spec.sparsity] = 0.0
        params[name] = w

    for k, text in enumerate(model["encoder_branches"]):
        spec = LinearSpec.parse(text)
        for layer in range(3):
            prefix = f"encoder/branch_{k}/layers_{layer}"
            weight(f"{prefix}/input_kernel", (240 if layer == 0 else 256, 1024), spec)
            weight(f"{prefix}/recurrent_kernel", (256, 1024), spec)
            params[f"{prefix}/bias"] = np.zeros(1024, np.float32)
    for name, shape in (("encoder/arbitrator/w1", (241, 16)), ("encoder/arbitrator/b1", (16,)),
                        ("encoder/arbitrator/w2", (17, 2)), ("encoder/arbitrator/b2", (2,)),
                        ("embed/embedding", (vocab, 64)), ("predictor/layers_0/input_kernel",
                                                        (64, 1024)),
                        ("predictor/layers_0/recurrent_kernel", (256, 1024)),
                        ("predictor/layers_0/bias", (1024,)),
                        ("encoder_to_joint/kernel", (256, 256)), ("encoder_to_joint/bias", (256,)),
                        ("predictor_to_joint/kernel", (256, 256)),
                        ("output_kernel", (256, vocab)), ("output_bias", (vocab,))):
        weight(name, shape)
    params["output_bias"][0] = 1e4  # every frame: one joint evaluation, then blank
    spec = DeviceSpec(model, dataclasses.asdict(frontend.FrontendConfig()),
                      ("", *" 'abcdefghijklmnopqrstuvwxyz"), 160)
    return spec, params


def branch_costs(frames: int, repeats: int) -> list[str]:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (frames, 240)).astype(np.float32)
    rows = ["| fast branch | ms/frame dense | ms/frame fast | measured saving | counted saving "
            "| measured / counted |", "|---|---:|---:|---:|---:|---:|"]
    for fast in ("lowrank(16)", "sparse(0.9)", "sparse(0.9,8x64)"):
        spec, params = _branch_model(fast, rng)
        costs = spec.branch_flops()
        recognizers = []
        for k in range(2):
            forced = dict(params)
            forced["encoder/arbitrator/b2"] = np.where(np.arange(2) == k, 1e4, 0).astype(
                np.float32)
            recognizers.append(Recognizer(spec, forced))
        times = {0: [], 1: []}
        for repeat in range(repeats):  # interleaved: both see the same machine
            for k in (0, 1) if repeat % 2 == 0 else (1, 0):
                stream = recognizers[k].stream()
                start = time.perf_counter()
                for frame in x:
                    stream.accept_frame(frame)
                times[k].append((time.perf_counter() - start) / frames)
                assert set(stream.branches) == {k}
        per_frame = {k: statistics.median(t) for k, t in times.items()}
        measured = 1 - per_frame[1] / per_frame[0]
        counted = 1 - costs[1] / costs[0]
        rows.append(f"| {fast} | {1e3 * per_frame[0]:.3f} | {1e3 * per_frame[1]:.3f} | "
                    f"{measured:.1%} | {counted:.1%} | {measured / counted:.2f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run_dir")
    p.add_argument("--data_dir")
    p.add_argument("--utterances", type=int, default=300)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--onnx", action="store_true",
                   help="also the ONNX graphs with onnxruntime, fp32 and int8 (extra `onnx`)")
    p.add_argument("--sherpa", action="store_true",
                   help="only the run in sherpa-onnx's layout, run by sherpa-onnx (extra "
                   "`sherpa`)")
    p.add_argument("--train_utterances", type=int, default=500,
                   help="--sherpa: training utterances for the fbank statistics")
    args = p.parse_args()
    if args.sherpa and not args.run_dir:
        p.error("--sherpa runs a trained run: give --run_dir")
    if args.sherpa:
        with tempfile.TemporaryDirectory() as tmp:
            print("\n".join(sherpa(Path(args.run_dir), args.data_dir, args.utterances,
                                   Path(tmp), args.train_utterances)))
        return
    if args.run_dir:
        with tempfile.TemporaryDirectory() as tmp:
            print("\n".join(parity(Path(args.run_dir), args.data_dir, args.utterances,
                                   Path(tmp) if args.onnx else None)))
        print()
    print("\n".join(branch_costs(args.frames, args.repeats)))


if __name__ == "__main__":
    main()
