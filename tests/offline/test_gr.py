"""``gr``: the label encoding against hand-derived sequences and an independent reconstruction,
the served histogram against the step probabilities it is built from, the windowed
soft-argmax against numpy, the curriculum's mixup against a hand-built second pass, ONNX
against torch, and a short synthetic run that learns."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model_export.data.features import CATEGORICAL_INPUT, NUMERIC_INPUT, fit_features
from model_export.data.prepared import encode
from model_export.data.synthetic import SYNTHETIC_FEATURES, generate
from model_export.export.onnx import onnx_bytes
from model_export.models.baseline import ServingBaseline
from model_export.models.gr import (
    GenerativeRegression,
    decode_tokens,
    encode_labels,
    gr_vocabulary,
)
from model_export.training.baselines import build_model, train_baseline
from model_export.training.config import BaselineConfig
from service.distributions import Histogram

SCALE = 10.0
TOKENS = (8, 3, 2)


def _labels(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.lognormal(1.5, 1.3, n)
    y[: n // 10] = 0.0
    return y


def _model(tokens: tuple[int, ...] = TOKENS, seed: int = 0, **kw: object) -> GenerativeRegression:
    leaves, buckets = gr_vocabulary(_labels(20_000), tokens)
    torch.manual_seed(seed)
    model = GenerativeRegression(
        [4],
        1,
        leaf_edges_s=leaves,
        bucket_edges_s=buckets,
        tokens=tokens,
        hidden=(8,),
        d_model=8,
        n_layers=2,
        label_scale=SCALE,
        **kw,  # type: ignore[arg-type]
    )
    return model.double().eval()


def _raw(model: GenerativeRegression, n: int, seed: int = 1, spread: float = 3.0) -> torch.Tensor:
    """A random head output: memory vectors with enough spread for peaked step laws."""
    g = torch.Generator().manual_seed(seed)
    width = model.n_memory * model.d_model
    return torch.randn(n, width, generator=g, dtype=torch.float64) * spread


def _midpoints(edges: np.ndarray, stride: int) -> np.ndarray:
    e = edges[::stride]
    return 0.5 * (e[1:] + e[:-1])


# ----- vocabulary and label encoding ------------------------------------------------------------


def test_encoding_by_hand() -> None:
    edges = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # 8 leaves, tokens (2, 2, 2)
    y = np.array([0.0, 0.99, 1.0, 3.5, 4.0, 7.9, 100.0, -3.0])
    want = [
        [0, 0, 0],  # leaf 0
        [0, 0, 0],
        [0, 0, 1],  # on an edge: the upper leaf, as the histogram's bucket rule
        [0, 1, 1],  # leaf 3
        [1, 0, 0],  # leaf 4
        [1, 1, 1],  # leaf 7
        [1, 1, 1],  # past the nominal end: the open last leaf
        [0, 0, 0],  # below 0: the first leaf
    ]
    np.testing.assert_array_equal(encode_labels(y, edges, (2, 2, 2)), want)
    # Mixed radix (3, 2): leaf 5 of 6 is (2, 1), leaf 2 is (1, 0).
    six = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    np.testing.assert_array_equal(
        encode_labels(np.array([5.5, 2.2]), six, (3, 2)), [[2, 1], [1, 0]]
    )
    np.testing.assert_allclose(decode_tokens(np.array([[2, 1], [1, 0]]), six, (3, 2)), [5.5, 2.5])
    np.testing.assert_allclose(
        decode_tokens(np.array(want), edges, (2, 2, 2)), [0.5, 0.5, 1.5, 3.5, 4.5, 7.5, 7.5, 0.5]
    )


def test_random_labels_round_trip_against_an_independent_reconstruction() -> None:
    y_train = _labels(30_000, 2)
    leaves, _ = gr_vocabulary(y_train, TOKENS)
    y = np.concatenate(
        [_labels(2_000, 3), np.random.default_rng(4).uniform(0, 2 * leaves[-1], 200)]
    )
    seq = encode_labels(y, leaves, TOKENS)
    got = decode_tokens(seq, leaves, TOKENS)
    inner = leaves[1:-1]
    for i in range(0, y.size, 7):
        leaf = sum(e <= y[i] for e in inner)  # the histogram's rule, written out
        digits = []
        rest = leaf
        for k in reversed(TOKENS):
            rest, d = divmod(rest, k)
            digits.append(d)
        assert list(seq[i]) == digits[::-1]
        assert got[i] == pytest.approx(0.5 * (leaves[leaf] + leaves[leaf + 1]))
    # Nearly lossless: inside every closed leaf the error is at most half its width.
    closed = y < leaves[-2]
    width = np.diff(leaves)[np.searchsorted(np.asarray(inner), y, side="right")]
    assert np.all(np.abs(got - y)[closed] <= 0.5 * width[closed] + 1e-9)
    # The graph's encoding (torch, scaled units) is numpy's.
    model = _model()
    model.leaf_edges_s.copy_(torch.tensor(leaves))  # type: ignore[operator]
    torch_seq = model.tokens_of(torch.from_numpy(y / SCALE)).numpy()
    np.testing.assert_array_equal(torch_seq, seq)


def test_vocabulary_is_equal_frequency_and_nested() -> None:
    y = np.random.default_rng(5).gamma(0.8, 20.0, 64_000)  # no ties
    leaves, buckets = gr_vocabulary(y, TOKENS)
    n_leaves = math.prod(TOKENS)
    assert len(leaves) == n_leaves + 1 and len(buckets) == TOKENS[0] * TOKENS[1] + 1
    assert leaves[0] == 0.0 and np.all(np.diff(leaves) > 0) and np.all(np.diff(buckets) > 0)
    seq = encode_labels(y, leaves, TOKENS)
    share = np.bincount(seq[:, 0], minlength=TOKENS[0]) / y.size
    np.testing.assert_allclose(share, 1 / TOKENS[0], atol=0.003)
    # The served buckets are the depth-2 nodes: every K_3-th leaf edge, and their own open end
    # whose midpoint is the mean of the labels in the last bucket.
    np.testing.assert_allclose(buckets[:-1], leaves[:-1:2])
    tail = y[y >= buckets[-2]]
    assert 0.5 * (buckets[-2] + buckets[-1]) == pytest.approx(tail.mean(), abs=2e-3)
    # All ties at 0 (one label in ten): the lowest leaves are min-gap wide, still increasing.
    tied = _labels(20_000)
    lv, _ = gr_vocabulary(tied, TOKENS)
    assert np.all(np.diff(lv) >= 0.01 - 1e-9)
    assert encode_labels(np.zeros(1), lv, TOKENS)[0].tolist() == [0, 0, 0]


@torch.no_grad()
def test_token_values_sum_to_the_leaf_midpoint() -> None:
    model = _model()
    edges = model.leaf_edges_s.double().numpy()  # type: ignore[union-attr, operator]
    leaf_mid = 0.5 * (edges[1:] + edges[:-1])
    coarse_mid = _midpoints(edges, TOKENS[1] * TOKENS[2])
    np.testing.assert_allclose(model.token_values_s(0).numpy()[0], coarse_mid)
    values = [model.token_values_s(t).numpy() for t in range(len(TOKENS))]
    for leaf in range(math.prod(TOKENS)):
        digits = encode_labels(np.array([leaf_mid[leaf]]), edges, TOKENS)[0]
        node, total = 0, 0.0
        for t, k in enumerate(TOKENS):
            total += values[t][node, digits[t]]
            node = node * k + digits[t]
        assert total == pytest.approx(leaf_mid[leaf], rel=1e-12)


# ----- the served histogram and the point ---------------------------------------------------------


def _numpy_point(probs: list[np.ndarray], edges: np.ndarray, half: int) -> np.ndarray:
    """The greedy windowed soft-argmax, from the step probabilities and the leaf edges only."""
    n = probs[0].shape[0]
    out = np.zeros(n)
    for i in range(n):
        node_lo, node_hi, parent_mid = 0, len(edges) - 1, 0.0
        for p in probs:
            k_t = p.shape[1]
            size = (node_hi - node_lo) // k_t  # leaves per child
            lo = node_lo + size * np.arange(k_t)
            mids = 0.5 * (edges[lo] + edges[lo + size])
            best = int(np.argmax(p[i]))
            win = np.arange(max(0, best - half), min(k_t, best + half + 1))
            out[i] += np.sum(p[i, win] * (mids[win] - parent_mid)) / np.sum(p[i, win])
            node_lo, node_hi, parent_mid = lo[best], lo[best] + size, mids[best]
    return np.maximum(out, 0.0)


@torch.no_grad()
def test_served_histogram_is_proper_and_its_point_is_the_windowed_soft_argmax() -> None:
    model = _model()
    raw = _raw(model, 300)
    probs, edges, point = (t.numpy() for t in model.served(raw))
    k1, k2 = TOKENS[0], TOKENS[1]
    assert probs.shape == (300, k1 * k2) and edges.shape == (300, k1 * k2 + 1)
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(edges[0], model.bucket_edges_s.double().numpy())  # type: ignore[union-attr, operator]
    # The greedy pass's step laws agree with the histogram's marginal and conditional.
    steps, _ = model.greedy(raw)
    p = [s.numpy() for s in steps]
    grid = probs.reshape(300, k1, k2)
    np.testing.assert_allclose(p[0], grid.sum(axis=2), atol=1e-12)
    first = p[0].argmax(axis=1)
    cond = grid[np.arange(300), first] / grid[np.arange(300), first].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p[1], cond, atol=1e-10)
    leaf_edges = model.leaf_edges_s.double().numpy()  # type: ignore[union-attr, operator]
    np.testing.assert_allclose(point, _numpy_point(p, leaf_edges, model.window), rtol=1e-10)
    # The window matters: the plain expectation over all coarse slots is a different number.
    assert not np.allclose(point, _numpy_point(p, leaf_edges, half=k1))
    dist = Histogram(probs=probs, edges=edges, point=point)
    np.testing.assert_array_equal(dist.point(), point)
    assert np.all(np.isfinite(dist.icdf(np.array([0.1, 0.5, 0.9]))))


@torch.no_grad()
def test_teacher_forced_nll_is_the_histogram_mass_of_the_label() -> None:
    """Two steps: the teacher-forced cross-entropies sum to -log of the label's served bucket
    mass, computed by another pass (every coarse prefix at once)."""
    model = _model(tokens=(6, 4))
    raw = _raw(model, 120, seed=3)
    y = _labels(120, 6)
    probs, edges, point = (t.numpy() for t in model.served(raw))
    mass = Histogram(probs=probs, edges=edges).mass
    j = np.array([sum(e <= v for e in edges[0, 1:-1]) for v in y])
    nll = -np.log(mass[np.arange(120), j])
    r = np.abs(point / SCALE - y / SCALE)
    huber = np.where(r <= 1.0, 0.5 * r * r, r - 0.5)
    got = float(model.validation_loss(raw, torch.from_numpy(y / SCALE)))
    assert got == pytest.approx(float(np.mean(nll + model.huber_weight * huber)), rel=1e-10)


@torch.no_grad()
def test_extreme_outputs_and_labels_stay_proper() -> None:
    model = _model()
    for spread in (1e3, 1e-6):
        raw = _raw(model, 50, seed=7, spread=spread)
        probs, _, point = (t.numpy() for t in model.served(raw))
        assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        assert np.all(np.isfinite(point)) and np.all(point >= 0)
    y = torch.tensor([-5.0, 0.0, 1e6, 3.0], dtype=torch.float64)
    loss = model.loss(_raw(model, 4), y)
    assert torch.isfinite(loss)
    seq = model.tokens_of(y).numpy()
    assert seq[0].tolist() == [0, 0, 0] and seq[2].tolist() == [k - 1 for k in TOKENS]


def test_constructor_refuses_inconsistent_vocabularies() -> None:
    leaves, buckets = gr_vocabulary(_labels(5_000), TOKENS)
    with pytest.raises(ValueError, match="leaf edges"):
        GenerativeRegression(
            [4], 1, leaf_edges_s=leaves[:-1], bucket_edges_s=buckets, tokens=TOKENS
        )
    with pytest.raises(ValueError, match="bucket edges"):
        GenerativeRegression([4], 1, leaf_edges_s=leaves, bucket_edges_s=buckets[1:], tokens=TOKENS)
    with pytest.raises(ValueError, match="at least"):
        GenerativeRegression([4], 1, tokens=(16,))
    with pytest.raises(ValueError, match="multiple"):
        GenerativeRegression([4], 1, tokens=TOKENS, d_model=6)


# ----- curriculum embedding mixup ---------------------------------------------------------------


def test_mixup_share_follows_the_curriculum_and_feeds_soft_embeddings() -> None:
    model = _model()
    model.train()
    for m in model.modules():  # no dropout, so the passes can be compared
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    raw = _raw(model, 40, seed=8)
    seq = model.tokens_of(torch.from_numpy(_labels(40, 9) / SCALE))
    assert model.mixup_share() == 0.0
    forced = model.step_logits(raw, seq)
    with torch.no_grad():
        model.eval()
        again = model.step_logits(raw, seq)
        model.train()
    for a, b in zip(forced, again, strict=True):
        torch.testing.assert_close(a, b)
    model.steps_seen = model.mixup_ramp_steps // 2
    assert model.mixup_share() == pytest.approx(model.mixup_max / 2)
    model.steps_seen = 10 * model.mixup_ramp_steps
    assert model.mixup_share() == pytest.approx(model.mixup_max)
    # Every input its own soft token: the second pass reads sum_k p_k E_k of the first.
    model.mixup_max = 1.0  # type: ignore[misc]
    mixed = model.step_logits(raw, seq)
    soft = [
        torch.softmax(forced[t], dim=1) @ model.decoder.step_embeddings(t)
        for t in range(len(TOKENS) - 1)
    ]
    by_hand = model.decoder.forced(model.memory(raw), soft)
    for t in range(len(TOKENS)):
        torch.testing.assert_close(mixed[t], by_hand[t])
    assert not torch.allclose(mixed[1], forced[1])
    # Training-mode losses count the curriculum's steps.
    before = model.steps_seen
    model.loss(raw, torch.from_numpy(_labels(40, 9) / SCALE))
    assert model.steps_seen == before + 1


# ----- export and training ----------------------------------------------------------------------


def test_onnx_export_matches_torch() -> None:
    data = generate(3_000, seed=11)
    fitted = fit_features(data.frame, SYNTHETIC_FEATURES)
    config = BaselineConfig(model="gr", hidden=(16,), gr_tokens=(6, 3, 2), gr_d_model=8)
    model = build_model(config, fitted, data.y)
    assert isinstance(model, GenerativeRegression)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    serving = ServingBaseline(model).eval()
    session = ort.InferenceSession(onnx_bytes(serving, fitted))
    enc = encode(fitted, data.frame.iloc[:500])
    with torch.no_grad():
        want = [t.double().numpy() for t in serving(enc.categorical, enc.numeric)]
    for n in (1, 7, 500):
        feeds = {
            CATEGORICAL_INPUT: enc.categorical[:n].numpy(),
            NUMERIC_INPUT: enc.numeric[:n].numpy(),
        }
        got = session.run(serving.output_names(), feeds)
        for name, a, b in zip(serving.output_names(), got, want, strict=True):
            assert a.shape == b[:n].shape, name
            np.testing.assert_allclose(
                a, b[:n], rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name
            )


@pytest.mark.slow
def test_a_short_synthetic_run_learns() -> None:
    train, validation = generate(6_000, seed=12), generate(2_000, seed=13)
    fitted = fit_features(train.frame, SYNTHETIC_FEATURES)
    config = BaselineConfig(
        model="gr",
        hidden=(32, 16),
        gr_tokens=(8, 4, 2),
        gr_d_model=16,
        max_epochs=4,
        batch_size=256,
        num_threads=1,  # hundreds of small ops a step: a second thread mostly waits
    )
    model = build_model(config, fitted, train.y)
    tr, va = encode(fitted, train.frame), encode(fitted, validation.frame)
    y_tr, y_va = tr.y / SCALE, va.y / SCALE
    with torch.no_grad():
        untrained = float(model.eval().validation_loss(model(va.categorical, va.numeric), y_va))
    history = train_baseline(model, tr, va, y_tr, y_va, config, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert min(history.validation_nll) < untrained - 0.5
    assert model.steps_seen == len(history.train_loss) * math.ceil(6_000 / 256)
    # The learnt histogram beats the training days' marginal one on held-out rows.
    with torch.no_grad():
        probs, edges, _ = model.served(model(va.categorical, va.numeric))
    dist = Histogram(probs=probs.double().numpy(), edges=edges.double().numpy())
    y = va.y.double().numpy()
    learnt = -dist.log_prob(y[:, None])[:, 0].mean()
    marginal_probs = np.bincount(
        np.searchsorted(edges[0, 1:-1].double().numpy(), train.y, side="right"),
        minlength=probs.shape[1],
    )
    marginal = Histogram(
        probs=np.tile(marginal_probs + 1e-9, (y.size, 1)), edges=edges[0].double().numpy()
    )
    assert learnt < -marginal.log_prob(y[:, None])[:, 0].mean() - 0.05
