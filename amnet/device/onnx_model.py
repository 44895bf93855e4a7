r"""The device network as ONNX graphs for onnxruntime: export, int8 quantization, and a network
the device recognizer runs in place of the NumPy one (`amnet.device.network.Network`).

Three graphs, split as on-device transducer runtimes split them (encoder / decoder / joiner):

    encoder.onnx  x [1, D], h<l> [1, P_l], c<l> [1, H_l] per layer
                  -> enc_proj [1, J], h<l>_out, c<l>_out
    decoder.onnx  tokens [N] int64, h<l> [N, P], c<l> [N, H] per layer (LSTM predictor) or
                  window [N, C-1, E] (stateless) -> pred_proj [N, J], the new state
    joiner.onnx   enc_proj [A, J], pred_proj [N, J] (broadcast) -> logits [N, V]

The recognizer configuration (`DeviceSpec`: frontend, tokens) rides in the encoder's metadata
(`amnet`), and tokens.txt lists the token texts. The equations are `network.py`'s, in float32.
Only dense single-branch encoders are exported: AmNet's per-frame branch choice would be an If
node per frame; its saving is measured on the NumPy runtime. `quantize` writes dynamic int8
copies (onnxruntime's `quantize_dynamic`: int8 weights per output channel, activations
quantized at run time).

    python -m amnet.device.onnx_model --model=device.safetensors --out=onnx [--int8=onnx_int8]
    python -m amnet.transcribe --onnx=onnx_int8 speech.wav
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from amnet.device import kernels
from amnet.device.network import EncoderState, LSTMLayer, Network
from amnet.device.spec import METADATA_KEY, DeviceSpec, SpecError
from neuraldiff import model_file

GRAPHS = ("encoder", "decoder", "joiner")
TOKEN_NAMES = {"": "<blk>", " ": "\u2581"}  # tokens.txt: the blank and the space, visible
OPSET = 17
IR_VERSION = 8  # read by every onnxruntime since 1.10


class _Graph:
    """Collects the nodes, initializers and names of one ONNX graph."""

    def __init__(self):
        import onnx  # noqa: F401  (the extra `onnx`; the NumPy runtime does not need it)

        self.nodes, self.initializers, self.count = [], [], 0
        self.names: dict[str, np.ndarray] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; a name already added is reused (a layer unrolled over frames) if
        its value is the same.

        Raises:
          ValueError: `name` was added with another dtype, shape or value.
        """
        from onnx import numpy_helper

        value = np.array(value, order="C")  # (0-d stays 0-d: a scalar index)
        if name in self.names:
            known = self.names[name]
            if known.dtype != value.dtype or not np.array_equal(known, value):
                raise ValueError(f"ONNX initializer {name!r} added twice with different values "
                                 f"({known.dtype}{list(known.shape)} and "
                                 f"{value.dtype}{list(value.shape)})")
        else:
            self.names[name] = value
            self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None,
           **attributes) -> str | list[str]:
        from onnx import helper

        self.count += 1
        names = [name] if name and outputs == 1 else [
            f"{kind.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def lstm(self, layer: LSTMLayer, prefix: str, x: str, h: str, c: str,
             out_names: tuple[str, str] | None = None) -> tuple[str, str]:
        """One LSTM step (`LSTMLayer.step`): returns the new (h, c) names."""
        if not isinstance(layer.gates, kernels.Dense) or (
                layer.projection is not None and not isinstance(layer.projection,
                                                                kernels.Dense)):
            raise SpecError("ONNX export supports dense kernels only")
        hidden = layer.hidden
        gates = self.op("Add", self.op("MatMul", self.op("Concat", x, h, axis=1),
                                       self.const(f"{prefix}/gates", layer.gates.kernel)),
                        self.const(f"{prefix}/bias", layer.bias))
        split = self.const(f"{prefix}/split", np.full(4, hidden, np.int64))
        i, f, g, o = self.op("Split", gates, split, outputs=4, axis=1)
        new_h_name, new_c_name = out_names or (None, None)
        c_new = self.op("Add", self.op("Mul", self.op("Sigmoid", f), c),
                        self.op("Mul", self.op("Sigmoid", i), self.op("Tanh", g)),
                        name=new_c_name)
        h_new = self.op("Mul", self.op("Sigmoid", o), self.op("Tanh", c_new),
                        name=None if layer.projection is not None else new_h_name)
        if layer.projection is not None:
            h_new = self.op("MatMul", h_new,
                            self.const(f"{prefix}/projection", layer.projection.kernel),
                            name=new_h_name)
        return h_new, c_new

    def model(self, name: str, inputs: list, outputs: list, metadata: dict[str, str]):
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="amnet")
        model.ir_version = IR_VERSION
        helper.set_model_props(model, metadata)
        checker.check_model(model)
        return model


def _value(name: str, dtype, shape: list) -> object:
    from onnx import TensorProto, helper

    kind = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64}[dtype]
    return helper.make_tensor_value_info(name, kind, shape)


def _state_values(layers: list[LSTMLayer], batch: str, suffix: str = "") -> list:
    out = []
    for i, layer in enumerate(layers):
        out += [_value(f"h{i}{suffix}", np.float32, [batch, layer.output_dim]),
                _value(f"c{i}{suffix}", np.float32, [batch, layer.hidden])]
    return out


def export(model_path: str | Path, out_dir: str | Path) -> Path:
    """Writes encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt of a device model file
    (fingerprint checked) into `out_dir`; returns it.

    Raises:
      SpecError: the file is no recognizer, or its encoder is branched or not dense.
    """
    import onnx

    spec, net = read_dense(model_path, "ONNX export")
    metadata = {METADATA_KEY: spec.to_json()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    g = _Graph()  # encoder
    layers = net.encoder.branches[0]
    x = "x"
    for i, layer in enumerate(layers):
        x, _ = g.lstm(layer, f"encoder/{i}", x, f"h{i}", f"c{i}", (f"h{i}_out", f"c{i}_out"))
    g.op("Add", g.op("MatMul", x, g.const("encoder_to_joint/kernel", net.enc_kernel.kernel)),
         g.const("encoder_to_joint/bias", net.enc_bias), name="enc_proj")
    joint_dim = net.enc_kernel.shape[1]
    onnx.save(g.model("encoder", [_value("x", np.float32, [1, spec.model["input_dim"]]),
                                  *_state_values(layers, "1")],
                      [_value("enc_proj", np.float32, [1, joint_dim]),
                       *_state_values(layers, "1", "_out")], metadata),
              out / "encoder.onnx")

    g = _Graph()  # decoder
    p = net.predictor
    x = g.op("Gather", g.const("embedding", p.embedding), "tokens", axis=0)
    if p.stateless:
        embed = p.embedding.shape[1]
        window = g.op("Concat", "window", g.op("Unsqueeze", x, g.const("axis1", np.array(
            [1], np.int64))), axis=1)
        flat = g.op("Reshape", window, g.const("flat", np.array([-1, p.context * embed],
                                                                np.int64)))
        x = g.op("Relu", g.op("Add", g.op("MatMul", flat, g.const("stateless/kernel",
                                                                  p.kernel.kernel)),
                              g.const("stateless/bias", p.bias)))
        g.op("Slice", window, g.const("from", np.array([1], np.int64)),
             g.const("to", np.array([p.context], np.int64)), g.const("axes", np.array(
                 [1], np.int64)), name="window_out")
        state_in = [_value("window", np.float32, ["N", p.context - 1, embed])]
        state_out = [_value("window_out", np.float32, ["N", p.context - 1, embed])]
    else:
        for i, layer in enumerate(p.layers):
            x, _ = g.lstm(layer, f"predictor/{i}", x, f"h{i}", f"c{i}",
                          (f"h{i}_out", f"c{i}_out"))
        state_in, state_out = _state_values(p.layers, "N"), _state_values(p.layers, "N", "_out")
    g.op("MatMul", x, g.const("predictor_to_joint/kernel", net.pred_kernel.kernel),
         name="pred_proj")
    onnx.save(g.model("decoder", [_value("tokens", np.int64, ["N"]), *state_in],
                      [_value("pred_proj", np.float32, ["N", joint_dim]), *state_out],
                      metadata), out / "decoder.onnx")

    onnx.save(joiner(net, ("enc_proj", "A"), ("pred_proj", "N"), "logits", metadata),
              out / "joiner.onnx")
    write_tokens(spec, out / "tokens.txt")
    return out


def read_dense(model_path: str | Path, what: str) -> tuple[DeviceSpec, Network]:
    """The recognizer of a device model file (fingerprint checked) whose encoder is a dense
    single branch, for `what` (an export) to write as graphs.

    Raises:
      SpecError: the file is no recognizer, or its encoder is branched or not dense.
    """
    model = model_file.read(model_path)
    spec = DeviceSpec.from_metadata(model.metadata, str(model_path))
    if len(spec.branches) != 1 or spec.branches[0].kind != "dense":
        raise SpecError(f"{model_path}: {what} supports a dense single-branch encoder, "
                        f"not {spec.model['encoder_branches']}")
    return spec, Network(spec, model.params)


def check_graphs(directory: Path, hint: str) -> None:
    """Raises SpecError naming `directory` and each of encoder/decoder/joiner.onnx it lacks
    (`hint`: the command that writes them)."""
    missing = [n for n in GRAPHS if not (directory / f"{n}.onnx").is_file()]
    if missing:
        raise SpecError(f"{directory}: no {', '.join(f'{n}.onnx' for n in missing)} ({hint})")


def joiner(net: Network, enc: tuple[str, str], pred: tuple[str, str], logits: str,
           metadata: dict[str, str]):
    """The joint as a graph: enc `[A, J]` and pred `[N, J]` (names, batch axes) -> logits
    `[N, V]`."""
    g = _Graph()
    g.op("Add", g.op("MatMul", g.op("Tanh", g.op("Add", enc[0], pred[0])),
                     g.const("output_kernel", net.out_kernel.kernel)),
         g.const("output_bias", net.out_bias), name=logits)
    joint_dim = net.enc_kernel.shape[1]
    return g.model("joiner", [_value(enc[0], np.float32, [enc[1], joint_dim]),
                              _value(pred[0], np.float32, [pred[1], joint_dim])],
                   [_value(logits, np.float32, [pred[1], net.spec.model["vocab_size"]])],
                   metadata)


def write_tokens(spec: DeviceSpec, path: Path, names: dict[str, str] = TOKEN_NAMES) -> None:
    """tokens.txt: `<text> <id>` per line, each token renamed by `names` (by default the blank
    as <blk> and the space as U+2581)."""
    path.write_text("".join(f"{names.get(t, t)} {i}\n" for i, t in enumerate(spec.tokens)))


def quantize(onnx_dir: str | Path, out_dir: str | Path) -> Path:
    """Dynamic int8 copies of an exported directory's graphs (weights int8 per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = Path(onnx_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) is for CNNs
    try:
        for name in GRAPHS:
            quantize_dynamic(src / f"{name}.onnx", out / f"{name}.onnx", per_channel=True,
                             weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    shutil.copyfile(src / "tokens.txt", out / "tokens.txt")
    return out


class _Encoder:
    def __init__(self, session):
        self.session = session
        self.shapes = [(i.name, i.shape[1]) for i in session.get_inputs() if i.name != "x"]

    def initial_state(self) -> EncoderState:
        zeros = [np.zeros((1, dim), np.float32) for _, dim in self.shapes]
        return EncoderState(list(zip(zeros[::2], zeros[1::2], strict=True)), np.float32(0.0), 0)


class _Predictor:
    def __init__(self, session):
        self.session = session
        self.inputs = [i for i in session.get_inputs() if i.name != "tokens"]
        self.stateless = self.inputs[0].name == "window"

    def initial_carry(self, n: int):
        if self.stateless:
            return np.zeros((n, *self.inputs[0].shape[1:]), np.float32)
        zeros = [np.zeros((n, i.shape[1]), np.float32) for i in self.inputs]
        return list(zip(zeros[::2], zeros[1::2], strict=True))


class OnnxNetwork:
    """`Network`'s interface (encode_step, predict_step, joint) over onnxruntime sessions of
    an exported directory, for `Recognizer(spec, network=...)`."""

    def __init__(self, onnx_dir: str | Path, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        d = Path(onnx_dir)
        check_graphs(d, "export with `python -m amnet.device.onnx_model`")
        sessions = {n: onnxruntime.InferenceSession(str(d / f"{n}.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
                    for n in GRAPHS}
        metadata = sessions["encoder"].get_modelmeta().custom_metadata_map
        self.spec = DeviceSpec.from_metadata(metadata, str(d / "encoder.onnx"))
        self.blank = int(self.spec.model["blank"])
        self.encoder = _Encoder(sessions["encoder"])
        self.predictor = _Predictor(sessions["decoder"])
        self._joiner = sessions["joiner"]

    def encode_step(self, x: np.ndarray, state: EncoderState):
        """x `[1, D]` -> enc_proj `[1, J]`, the new encoder state, branch 0."""
        feed = {"x": np.asarray(x, np.float32)}
        for i, (h, c) in enumerate(state.carries):
            feed[f"h{i}"], feed[f"c{i}"] = h, c
        enc_proj, *states = self.encoder.session.run(None, feed)
        carries = list(zip(states[::2], states[1::2], strict=True))
        return enc_proj, EncoderState(carries, state.finish, state.frames + 1), 0

    def predict_step(self, tokens: np.ndarray, carry):
        """tokens `[N]` -> pred_proj `[N, J]` and the new carry."""
        feed = {"tokens": np.asarray(tokens, np.int64)}
        if self.predictor.stateless:
            feed["window"] = carry
        else:
            for i, (h, c) in enumerate(carry):
                feed[f"h{i}"], feed[f"c{i}"] = h, c
        pred_proj, *states = self.predictor.session.run(None, feed)
        if self.predictor.stateless:
            return pred_proj, states[0]
        return pred_proj, list(zip(states[::2], states[1::2], strict=True))

    def joint(self, enc_proj: np.ndarray, pred_proj: np.ndarray) -> np.ndarray:
        """enc_proj `[A, J]` and pred_proj `[N, J]` (A = 1 or N) -> logits `[N, V]`."""
        return self._joiner.run(None, {"enc_proj": enc_proj, "pred_proj": pred_proj})[0]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Export a device model file to ONNX graphs.")
    p.add_argument("--model", required=True, help="a device model file (.safetensors)")
    p.add_argument("--out", required=True, help="directory for the float32 graphs")
    p.add_argument("--int8", help="also write dynamic-int8 graphs into this directory")
    args = p.parse_args(argv)
    try:
        out = export(args.model, args.out)
        written = [out] + ([quantize(out, args.int8)] if args.int8 else [])
    except (SpecError, model_file.ModelFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for d in written:
        sizes = ", ".join(f"{n}.onnx {(Path(d) / f'{n}.onnx').stat().st_size:,} B"
                          for n in GRAPHS)
        print(f"{d}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
