"""PyTorch baselines: the same weights give the same encoder outputs, joint logits, RNN-T loss
(and its gradient) and greedy transcripts as the JAX model. Tolerances: 1e-5 absolute on
activations and logits, 1e-5 relative on losses (float32 in both, different kernels)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is the optional extra `torch` (pip install -e '.[torch]'); the "
                    "parity tests need it")

from amnet import build  # noqa: E402
from amnet.data import input_pipeline  # noqa: E402
from amnet.rnnt import decoding, frontend  # noqa: E402
from amnet.rnnt import loss as rnnt  # noqa: E402
from amnet.rnnt.transducer import Transducer, TransducerConfig  # noqa: E402
from amnet.torch_baselines import convert  # noqa: E402
from amnet.torch_baselines import decoding as torch_decoding  # noqa: E402
from amnet.torch_baselines.rnnt_loss import rnnt_loss as torch_rnnt_loss  # noqa: E402
from amnet.training import checkpointing, rundir  # noqa: E402

SPECS = ("dense", "sparse(0.8)", "lowrank(3)")


def _config(spec):
    return TransducerConfig(input_dim=12, vocab_size=9, encoder_layers=2, encoder_hidden=16,
                            encoder_projection=10, embed_dim=6, predictor_layers=1,
                            predictor_hidden=14, joint_dim=11, encoder_branches=(spec,))


def _inputs():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 7, 12)).astype(np.float32)
    lengths = np.array([7, 5, 2], np.int32)
    targets = rng.integers(1, 9, (3, 4)).astype(np.int32)
    target_lengths = np.array([4, 2, 0], np.int32)
    return features, lengths, targets, target_lengths


def _params(config, sparse: bool):
    features, lengths, targets, target_lengths = _inputs()
    params = build.transducer(config).init(jax.random.key(1), features, lengths, targets,
                                     target_lengths)["params"]
    params = jax.tree.map(np.asarray, params)
    if sparse:  # a sparse encoder: 80% of each kernel exactly zero
        rng = np.random.default_rng(2)
        for layer in params["encoder"]["branch_0"].values():
            for name in ("input_kernel", "recurrent_kernel", "projection_kernel"):
                layer[name] = layer[name] * (rng.random(layer[name].shape) > 0.8)
    return params


@pytest.mark.parametrize("spec", SPECS)
def test_same_weights_give_the_same_outputs_logits_loss_and_gradient(spec):
    config = _config(spec)
    params = _params(config, spec.startswith("sparse"))
    features, lengths, targets, target_lengths = _inputs()
    model = build.transducer(config)
    enc = model.apply({"params": params}, features, lengths, method=Transducer.encode)[0]
    pred = model.apply({"params": params}, targets, target_lengths, method=Transducer.predict)
    logits = model.apply({"params": params}, enc[:, :, None], pred[:, None],
                         method=Transducer.joint)
    loss = rnnt.rnnt_loss(logits, lengths, targets, target_lengths)
    fused = model.apply({"params": params}, features, lengths, targets, target_lengths)
    grad = jax.grad(lambda x: jnp.sum(rnnt.rnnt_loss(x, lengths, targets, target_lengths)))(
        logits)

    torch_model = convert.to_torch(params, config)
    tensors = [torch.from_numpy(np.asarray(x)) for x in (features, lengths, targets,
                                                          target_lengths)]
    t_enc = torch_model.encode(tensors[0], tensors[1])
    t_logits = torch_model(*tensors).detach().requires_grad_(True)
    t_loss = torch_rnnt_loss(t_logits, tensors[1], tensors[2].long(), tensors[3])
    t_loss.sum().backward()

    np.testing.assert_allclose(t_enc.detach().numpy(), enc, atol=1e-5)
    np.testing.assert_allclose(t_logits.detach().numpy(), logits, atol=1e-5)
    np.testing.assert_allclose(t_loss.detach().numpy(), loss, rtol=1e-5)
    np.testing.assert_allclose(t_loss.detach().numpy(), fused, rtol=1e-5)
    np.testing.assert_allclose(t_logits.grad.numpy(), grad, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_weights_round_trip_between_jax_and_torch(spec):
    config = _config(spec)
    params = _params(config, spec.startswith("sparse"))
    back = convert.to_jax(convert.to_torch(params, config))
    flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    flat_back = dict(jax.tree_util.tree_flatten_with_path(back)[0])
    assert flat.keys() == flat_back.keys()
    for key, value in flat.items():
        np.testing.assert_array_equal(flat_back[key], value, err_msg=str(key))


def test_a_jax_trained_model_decodes_the_same_transcripts_in_pytorch(tiny_dense_run):
    config = rundir.read_run_config(tiny_dense_run)
    params, _ = checkpointing.load_params(tiny_dense_run)
    # The 12-step model mostly waits (blank); with its blank logit lowered it emits labels,
    # which both frameworks must then agree on.
    params = jax.tree.map(np.asarray, params)
    params["output_bias"] = params["output_bias"].copy()
    params["output_bias"][0] -= 6.0
    tokenizer = build.tokenizer(config)
    model_config = build.model_config(config, tokenizer.vocab_size)
    front, _ = build.frontend_configs(config)
    source = input_pipeline.open_source(config.data.name, "test", config.data.data_dir)
    audio = [np.asarray(source[i]["speech"], np.int16) for i in range(min(6, len(source)))]
    samples = max(a.size for a in audio)
    batch = np.stack([np.pad(a, (0, samples - a.size)) for a in audio])
    sample_lengths = np.array([a.size for a in audio], np.int32)
    features, lengths = frontend.featurize(batch, sample_lengths, front)
    tokens, token_lengths = decoding.greedy_decode(build.transducer(model_config), params, features,
                                                   lengths, max_length=96)
    jax_hyps = [np.asarray(tokens[i, : token_lengths[i]]).tolist() for i in range(len(audio))]
    torch_model = convert.to_torch(params, model_config)
    torch_hyps = torch_decoding.greedy_decode(torch_model, torch.from_numpy(np.array(features)),
                                              torch.from_numpy(np.array(lengths)),
                                              max_length=96)
    assert torch_hyps == jax_hyps
    assert sum(len(h) for h in jax_hyps) > 0  # the run emits something to compare


def test_pytorch_pruner_masks_what_the_jax_pruner_zeroes():
    """The PyTorch runner's sparse schedule: at a prune step, the same entries of every
    encoder kernel as `amnet.amortized.pruning.make_pruner` (same sparsity, same tie order)."""
    import ml_collections

    from amnet.amortized import pruning
    from amnet.torch_baselines.train import Pruner

    config = _config("sparse(0.8)")
    params = _params(config, sparse=False)
    schedule = ml_collections.ConfigDict({"start_step": 2, "end_step": 6, "every": 2})
    prune = pruning.make_pruner(config.encoder_branches, schedule)
    pruned = jax.device_get(prune(params, params, jnp.asarray(4)))
    model = convert.to_torch(params, config)
    Pruner(model, 0.8, schedule)(3)  # not a prune step: the masks stay (nothing pruned yet)
    assert all(float(m.min()) == 1.0 for layer in model.encoder for m in layer.masks.values())
    Pruner(model, 0.8, schedule)(4)
    for i, layer in enumerate(model.encoder):
        jax_layer = pruned["encoder"]["branch_0"][f"layers_{i}"]
        for name, key in (("weight_ih_l0", "input_kernel"), ("weight_hh_l0", "recurrent_kernel"),
                          ("weight_hr_l0", "projection_kernel")):
            np.testing.assert_array_equal(layer.masks[name].numpy().T,
                                          (jax_layer[key] != 0).astype(np.float32))


def test_the_stateless_predictor_and_ctc_head_agree_and_round_trip():
    config = TransducerConfig(input_dim=12, vocab_size=9, encoder_layers=1, encoder_hidden=16,
                              embed_dim=6, predictor="stateless", predictor_context=3,
                              predictor_hidden=14, joint_dim=11, ctc_head=True)
    params = _params(config, False)
    features, lengths, targets, target_lengths = _inputs()
    model = build.transducer(config)
    pred = model.apply({"params": params}, targets, target_lengths, method=Transducer.predict)
    ctc_logits = model.apply({"params": params}, features, lengths,
                             method=Transducer.ctc_logits)
    torch_model = convert.to_torch(params, config)
    tensors = [torch.from_numpy(np.asarray(x)) for x in (features, lengths, targets,
                                                          target_lengths)]
    t_pred = torch_model.predict(tensors[2].long(), tensors[3])
    _, t_ctc = torch_model.forward_with_ctc(tensors[0], tensors[1], tensors[2].long(),
                                            tensors[3])
    valid = np.arange(7)[None, :] < lengths[:, None]
    seen = np.arange(5)[None, :] <= target_lengths[:, None]  # positions past a length are padding
    np.testing.assert_allclose(t_pred.detach().numpy()[seen], np.asarray(pred)[seen], atol=1e-5)
    np.testing.assert_allclose(t_ctc.detach().numpy()[valid], np.asarray(ctc_logits)[valid],
                               atol=1e-5)
    back = convert.to_jax(torch_model)
    for (key, value), (_, other) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                        jax.tree_util.tree_flatten_with_path(back)[0],
                                        strict=True):
        np.testing.assert_array_equal(other, value, err_msg=str(key))
    # Greedy decoding with a stateless predictor: the PyTorch port follows JAX.
    tokens, counts = decoding.greedy_decode(model, params, jnp.asarray(features), lengths,
                                            max_length=12)
    ours = torch_decoding.greedy_decode(torch_model, tensors[0], tensors[1], max_length=12)
    assert ours == [np.asarray(t[:n]).tolist() for t, n in zip(tokens, counts, strict=True)]


def test_the_pytorch_runner_refuses_the_pruned_loss_it_does_not_have(tmp_path):
    from amnet.torch_baselines import train as torch_train
    from experiments.configs import baseline

    config = baseline.get_config("tiny")
    config.model.loss = "pruned"
    with pytest.raises(ValueError, match="exact RNN-T loss; got model.loss='pruned'"):
        torch_train.train_and_evaluate(config, str(tmp_path))
    assert not any(tmp_path.iterdir())
