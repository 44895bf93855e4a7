"""RNN-T loss: exact against brute force and numpy alpha/beta; fused equals naive."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amnet.rnnt import loss as rnnt

jax.config.update("jax_enable_x64", False)


def _brute_force_cost(logits, targets, blank):
    """-log of the sum over every alignment, enumerated explicitly (one utterance)."""
    frames, width, _ = logits.shape
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    total = []
    # A path: T-1 blank moves and U label moves in any order, then the final blank at T-1.
    for label_steps in itertools.combinations(range(frames - 1 + width - 1), width - 1):
        t = u = 0
        score = 0.0
        for step in range(frames - 1 + width - 1):
            if step in label_steps:
                score += log_probs[t, u, targets[u]]
                u += 1
            else:
                score += log_probs[t, u, blank]
                t += 1
        total.append(score + log_probs[frames - 1, width - 1, blank])
    return -jax.nn.logsumexp(jnp.stack(total))


def _random_case(seed, batch, frames, width, vocab):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, frames, width, vocab)).astype(np.float32)
    targets = rng.integers(1, vocab, size=(batch, width - 1)).astype(np.int32)
    return jnp.asarray(logits), jnp.asarray(targets)


@pytest.mark.parametrize("frames, labels, blank", [(3, 2, 0), (4, 3, 0), (2, 2, 4), (1, 2, 0),
                                                   (3, 0, 0)])
def test_matches_brute_force_values_and_gradients(frames, labels, blank):
    logits, targets = _random_case(frames * 10 + labels, 1, frames, labels + 1, 5)
    lengths, target_lengths = jnp.array([frames]), jnp.array([labels])
    loss = jax.jit(lambda x: rnnt.rnnt_loss(x, lengths, targets, target_lengths,
                                            blank=blank).sum())
    brute = jax.jit(lambda x: _brute_force_cost(x[0], targets[0], blank))
    np.testing.assert_allclose(loss(logits), brute(logits), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(logits), jax.jit(jax.grad(brute))(logits),
                               atol=1e-5)


WARP_ACTS = np.array([0.1, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.6, 0.1, 0.1, 0.1, 0.1, 0.2, 0.8, 0.1,
                      0.1, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.1, 0.7, 0.1, 0.2, 0.1, 0.1],
                     np.float32).reshape(1, 2, 3, 5)


@pytest.mark.parametrize("blank, expected", [(4, 5.09566688538), (0, 4.495666)])
def test_warp_transducer_reference_example(blank, expected):
    cost = rnnt.rnnt_loss(WARP_ACTS, jnp.array([2]), jnp.array([[1, 2]]), jnp.array([2]),
                          blank=blank)
    np.testing.assert_allclose(cost, [expected], rtol=1e-6)


def _numpy_alpha_beta(logits, frames, targets, blank):
    """float64 forward-backward: cost and gradient w.r.t. logits of one utterance."""
    logits = logits[:frames, : len(targets) + 1].astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    width = len(targets) + 1
    blank_lp = log_probs[..., blank]
    emit_lp = np.stack([log_probs[:, u, targets[u]] for u in range(width - 1)], 1) \
        if width > 1 else np.zeros((frames, 0))
    alpha = np.full((frames, width), -np.inf)
    beta = np.full((frames, width), -np.inf)
    alpha[0, 0] = 0.0
    for t in range(frames):
        for u in range(width):
            if t or u:
                a = alpha[t - 1, u] + blank_lp[t - 1, u] if t else -np.inf
                b = alpha[t, u - 1] + emit_lp[t, u - 1] if u else -np.inf
                alpha[t, u] = np.logaddexp(a, b)
    beta[frames - 1, width - 1] = blank_lp[frames - 1, width - 1]
    for t in reversed(range(frames)):
        for u in reversed(range(width)):
            if t == frames - 1 and u == width - 1:
                continue
            a = beta[t + 1, u] + blank_lp[t, u] if t < frames - 1 else -np.inf
            b = beta[t, u + 1] + emit_lp[t, u] if u < width - 1 else -np.inf
            beta[t, u] = np.logaddexp(a, b)
    log_z = beta[0, 0]
    np.testing.assert_allclose(log_z, alpha[-1, -1] + blank_lp[-1, -1], rtol=1e-10)
    # Flow through each edge, then the chain rule through log-softmax.
    next_beta = np.concatenate([beta[1:], np.full((1, width), -np.inf)])
    next_beta[frames - 1, width - 1] = 0.0
    blank_flow = np.exp(alpha + blank_lp + next_beta - log_z)
    emit_flow = np.zeros_like(blank_flow)
    if width > 1:
        emit_flow[:, :-1] = np.exp(alpha[:, :-1] + emit_lp + beta[:, 1:] - log_z)
    grad = np.exp(log_probs) * (blank_flow + emit_flow)[..., None]
    grad[..., blank] -= blank_flow
    for u in range(width - 1):
        grad[:, u, targets[u]] -= emit_flow[:, u]
    return -log_z, grad


def test_matches_numpy_forward_backward_with_padding():
    frames, labels = [7, 4, 1, 6], [3, 5, 2, 0]
    logits, targets = _random_case(3, 4, max(frames), max(labels) + 1, 8)
    lengths, target_lengths = jnp.array(frames), jnp.array(labels)
    loss = jax.jit(lambda x: rnnt.rnnt_loss(x, lengths, targets, target_lengths))
    costs = loss(logits)
    grads = jax.jit(jax.grad(lambda x: loss(x).sum()))(logits)
    for b in range(4):
        cost, grad = _numpy_alpha_beta(np.asarray(logits[b]), frames[b],
                                       np.asarray(targets[b, : labels[b]]), 0)
        np.testing.assert_allclose(costs[b], cost, rtol=1e-5)
        np.testing.assert_allclose(grads[b, : frames[b], : labels[b] + 1], grad, atol=2e-5)
        assert not np.any(grads[b, frames[b]:]) and not np.any(grads[b, :, labels[b] + 1:])


def test_padding_does_not_change_costs():
    logits, targets = _random_case(4, 1, 5, 4, 6)
    alone = rnnt.rnnt_loss(logits, jnp.array([5]), targets, jnp.array([3]))
    padded_logits = jnp.pad(logits, ((0, 0), (0, 4), (0, 3), (0, 0)), constant_values=7.0)
    padded_targets = jnp.pad(targets, ((0, 0), (0, 3)), constant_values=2)
    padded = rnnt.rnnt_loss(padded_logits, jnp.array([5]), padded_targets, jnp.array([3]))
    np.testing.assert_allclose(alone, padded, rtol=1e-6)


def test_large_vocabulary_and_long_sequences_have_finite_gradients():
    logits, targets = _random_case(5, 2, 400, 81, 64)
    loss = lambda x: rnnt.rnnt_loss(x, jnp.array([400, 250]), targets,  # noqa: E731
                                    jnp.array([80, 40])).sum()
    value, grad = jax.jit(jax.value_and_grad(loss))(logits * 5.0)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    big_v, big_t = _random_case(6, 1, 3, 3, 5000)
    assert np.isfinite(rnnt.rnnt_loss(big_v, jnp.array([3]), big_t, jnp.array([2]))).all()


def test_bfloat16_inputs_are_computed_in_float32():
    logits, targets = _random_case(7, 2, 6, 4, 9)
    args = (jnp.array([6, 3]), targets, jnp.array([3, 2]))
    low = rnnt.rnnt_loss(logits.astype(jnp.bfloat16), *args)
    assert low.dtype == jnp.float32
    exact = rnnt.rnnt_loss(logits.astype(jnp.bfloat16).astype(jnp.float32), *args)
    np.testing.assert_allclose(low, exact, rtol=1e-6)


def _joint_case(seed, batch=3, frames=11, labels=5, hidden=8, vocab=13):
    keys = jax.random.split(jax.random.key(seed), 5)
    enc = jax.random.normal(keys[0], (batch, frames, hidden))
    pred = jax.random.normal(keys[1], (batch, labels + 1, hidden))
    kernel = jax.random.normal(keys[2], (hidden, vocab)) * 0.5
    bias = jax.random.normal(keys[3], (vocab,)) * 0.1
    targets = jax.random.randint(keys[4], (batch, labels), 1, vocab)
    lengths = jnp.array([frames, frames - 4, 1][:batch])
    target_lengths = jnp.array([labels, 2, 0][:batch])
    return (enc, pred, kernel, bias), lengths, targets, target_lengths


@pytest.mark.parametrize("frames_per_chunk", [1, 4])
def test_fused_loss_equals_naive_values_and_gradients(frames_per_chunk):
    joint_args, lengths, targets, target_lengths = _joint_case(0)

    def naive(enc, pred, kernel, bias):
        logits = rnnt.joint_logits(enc, pred, kernel, bias)
        return rnnt.rnnt_loss(logits, lengths, targets, target_lengths)

    def fused(enc, pred, kernel, bias):
        return rnnt.rnnt_loss_fused(enc, pred, kernel, bias, lengths, targets, target_lengths,
                                    frames_per_chunk=frames_per_chunk)

    np.testing.assert_allclose(jax.jit(fused)(*joint_args), jax.jit(naive)(*joint_args),
                               rtol=1e-4)
    grad = lambda f: jax.jit(jax.grad(lambda *a: f(*a).sum(), argnums=(0, 1, 2, 3)))  # noqa: E731
    grads_naive, grads_fused = grad(naive)(*joint_args), grad(fused)(*joint_args)
    for name, g_fused, g_naive in zip(("enc", "pred", "kernel", "bias"), grads_fused,
                                      grads_naive, strict=True):
        scale = np.abs(g_naive).max()
        np.testing.assert_allclose(g_fused, g_naive, rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=name)
