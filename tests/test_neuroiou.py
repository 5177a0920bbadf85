"""NeuroIoU: features against a float64 NumPy reference, the frozen-surrogate loss, fitting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses import neuroiou
from jaxseg.training import surrogate as fitting


def _np_stats(logits, labels, kind, num_inputs, ignore_index=255):
    """Independent float64 reference, one (image, class) pair at a time."""
    logits = np.asarray(logits, np.float64)
    b_num, c_num = logits.shape[0], logits.shape[-1]
    feats = np.zeros((b_num, c_num, num_inputs))
    targets = np.zeros((b_num, c_num))
    keep = np.zeros((b_num, c_num), bool)
    for b in range(b_num):
        f = logits[b].reshape(-1, c_num)
        y = np.asarray(labels[b]).reshape(-1)
        v = y != ignore_index
        f, y = f[v], y[v]
        n = max(len(y), 1)
        e = np.exp(f - f.max(-1, keepdims=True))
        prob = e / e.sum(-1, keepdims=True)
        pred = f.argmax(-1)
        for c in range(c_num):
            tp = (pred == c) & (y == c)
            fp = (pred == c) & (y != c)
            fn = (pred != c) & (y == c)
            if kind == "prob":
                val = prob[:, c]
            else:
                s = np.where(y == c, 1.0, -1.0)
                val = np.maximum(0.0, 1.0 - s * f[:, c])
            sums = [val[m].sum() for m in (tp, fp, fn)]
            cnt = [m.sum() for m in (tp, fp, fn)]
            row = [s / n for s in sums]
            if num_inputs == 6:
                row += [s / k if k else 0.0 for s, k in zip(sums, cnt)]
            feats[b, c] = row
            union = sum(cnt)
            keep[b, c] = union > 0
            targets[b, c] = 1 - cnt[0] / union if union else 0.0
    return feats, targets, keep


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(3, 6, 7)).astype(np.int32)  # class 3 never in GT
    labels[0, :2] = 255
    labels[2] = 255  # an image with no valid pixel: every pair left out
    logits = rng.normal(size=(3, 6, 7, 4)).astype(np.float32) * 1.5
    logits[1, ..., 3] -= 10.0  # class 3 absent from both GT and prediction in image 1
    return logits, labels


@pytest.mark.parametrize("kind", ["prob", "hinge"])
@pytest.mark.parametrize("num_inputs", [3, 6])
def test_statistics_match_reference(batch, kind, num_inputs):
    logits, labels = batch
    f, t, k = neuroiou.neuroiou_statistics(logits, labels, kind=kind, num_inputs=num_inputs)
    ef, et, ek = _np_stats(logits, labels, kind, num_inputs)
    np.testing.assert_array_equal(np.asarray(k), ek)
    assert not ek[1, 3] and not ek[2].any() and ek[0, :3].all()
    np.testing.assert_allclose(np.asarray(f), ef, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(t), et, rtol=1e-6, atol=1e-7)
    assert f.shape == (3, 4, num_inputs) and f.dtype == jnp.float32


def test_gradient_through_soft_counts_only(batch):
    """Jacobian-vector product of the features equals finite differences (hard sets fixed)."""
    logits, labels = batch
    direction = np.random.default_rng(1).normal(size=logits.shape).astype(np.float32)
    for kind in ("prob", "hinge"):
        fn = lambda x: neuroiou.neuroiou_features(x, labels, kind=kind)[0]  # noqa: E731
        _, jvp = jax.jvp(fn, (jnp.asarray(logits),), (jnp.asarray(direction),))
        eps = 1e-3
        plus = _np_stats(logits + eps * direction, labels, kind, 6)[0]
        minus = _np_stats(logits - eps * direction, labels, kind, 6)[0]
        assert np.array_equal(
            (logits + eps * direction).argmax(-1), logits.argmax(-1)
        ), "eps flipped a prediction"
        np.testing.assert_allclose(np.asarray(jvp), (plus - minus) / (2 * eps), atol=2e-3)


def test_loss_mean_over_kept_pairs_and_frozen(batch):
    logits, labels = batch
    sur = neuroiou.init_surrogate(jax.random.key(0), hidden=(8, 8), kind="prob", num_inputs=6)
    f, _, k = neuroiou.neuroiou_statistics(logits, labels)
    values = np.asarray(sur.module.apply({"params": sur.params}, f))
    want = values[np.asarray(k)].mean()
    got = jax.jit(lambda x: neuroiou.neuroiou_loss(x, labels, surrogate=sur))(logits)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # gradients reach the logits, not the surrogate's parameters
    g = jax.grad(lambda x: neuroiou.neuroiou_loss(x, labels, surrogate=sur))(jnp.asarray(logits))
    assert np.abs(np.asarray(g)).sum() > 0
    np.testing.assert_array_equal(np.asarray(g)[labels == 255], 0.0)

    def wrt_params(p):
        s = neuroiou.Surrogate(p, sur.hidden, sur.activation, sur.kind, sur.num_inputs)
        return neuroiou.neuroiou_loss(logits, labels, surrogate=s)

    gp = jax.grad(wrt_params)(sur.params)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(gp))


def test_loss_no_pair_gives_zero(batch):
    logits, labels = batch
    sur = neuroiou.init_surrogate(jax.random.key(0), hidden=(4,), num_inputs=3)
    void = np.full_like(labels, 255)
    val, g = jax.value_and_grad(lambda x: neuroiou.neuroiou_loss(x, void, surrogate=sur))(
        jnp.asarray(logits)
    )
    assert float(val) == 0.0 and np.all(np.asarray(g) == 0)


def test_bad_inputs(batch):
    logits, labels = batch
    with pytest.raises(ValueError, match="labels shape .* does not match"):
        neuroiou.neuroiou_statistics(logits, labels[:, :2])
    with pytest.raises(ValueError, match="num_inputs"):
        neuroiou.neuroiou_statistics(logits, labels, num_inputs=4)
    with pytest.raises(ValueError, match="kind"):
        neuroiou.neuroiou_statistics(logits, labels, kind="dice")
    sur = neuroiou.init_surrogate(jax.random.key(0), hidden=(4,), num_inputs=3)
    with pytest.raises(ValueError, match="expects 3 features"):
        sur(jnp.zeros((2, 6)))


def test_save_load_and_registry(tmp_path, batch):
    from jaxseg.losses.registry import build_loss

    logits, labels = batch
    sur = neuroiou.init_surrogate(
        jax.random.key(3), hidden=(5, 7), activation="tanh", kind="hinge", num_inputs=6
    )
    sur = neuroiou.Surrogate(
        sur.params, sur.hidden, "tanh", "hinge", 6, {"val_mse": 0.25},
        feature_mean=np.linspace(0, 1, 6), feature_scale=np.linspace(1, 2, 6),
    )
    path = tmp_path / "sub" / "s.msgpack"
    neuroiou.save_surrogate(path, sur)
    back = neuroiou.load_surrogate(path)
    assert (back.hidden, back.activation, back.kind, back.num_inputs) == ((5, 7), "tanh", "hinge", 6)
    assert back.metrics == {"val_mse": 0.25}
    np.testing.assert_allclose(back.feature_mean, np.linspace(0, 1, 6))
    np.testing.assert_allclose(back.feature_scale, np.linspace(1, 2, 6))
    # standardisation is applied before the MLP
    f = jnp.asarray(np.random.default_rng(0).random((3, 6)), jnp.float32)
    np.testing.assert_allclose(
        np.asarray(back(f)),
        np.asarray(sur.module.apply({"params": sur.params},
                                    (f - np.linspace(0, 1, 6)) / np.linspace(1, 2, 6))),
        rtol=1e-5, atol=1e-6,
    )
    for a, b in zip(jax.tree_util.tree_leaves(sur.params), jax.tree_util.tree_leaves(back.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fn = build_loss({"name": "neuroiou", "kwargs": {"surrogate_path": str(path)}})
    np.testing.assert_allclose(
        float(fn(logits, labels)),
        float(neuroiou.neuroiou_loss(logits, labels, surrogate=sur)),
        rtol=1e-6,
    )
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"not a surrogate")
    with pytest.raises(ValueError, match="not a NeuroIoU surrogate"):
        neuroiou.load_surrogate(bad)
    with pytest.raises(FileNotFoundError):
        neuroiou.load_surrogate(tmp_path / "missing")
    with pytest.raises(ValueError, match="exactly one"):
        neuroiou.build_neuroiou()
    with pytest.raises(ValueError, match="no surrogate file"):
        neuroiou.build_neuroiou(surrogate_path=str(tmp_path / "missing.msgpack"))
    with pytest.raises(ValueError, match="surrogate_path is empty"):
        neuroiou.build_neuroiou(surrogate_path="")


def test_function_approximation():
    """Paper Sec. 4.2: an MLP fits f(x) = 2 - x (x < 1), x + 0.1 (x >= 1) and f' away from 1."""
    x = np.linspace(0.0, 2.0, 401, dtype=np.float32)[:, None]
    y = np.where(x[:, 0] < 1, 2 - x[:, 0], x[:, 0] + 0.1)
    module, params, metrics, _ = fitting.fit_mlp(
        x, y, hidden=(64,), activation="sigmoid", steps=2000, batch_size=401,
        learning_rate=3e-2, val_fraction=0.0, seed=0,
    )
    f = lambda z: module.apply({"params": params}, z[None, None])[0]  # noqa: E731
    pred = np.asarray(module.apply({"params": params}, x))
    deriv = np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(x[:, 0])))
    away = np.abs(x[:, 0] - 1.0) > 0.2
    assert metrics["train_mse"] < 2e-3
    assert np.max(np.abs(pred - y)[away]) < 0.06
    d_err = np.abs(deriv - np.where(x[:, 0] < 1, -1.0, 1.0))[away]
    assert d_err.max() < 0.35 and d_err.mean() < 0.1
    # across the jump the smooth fit's slope is steep and positive
    assert deriv[200] > 0


def _synthetic_batches(num, rng):
    """Blobs of 3 classes on a 16x16 grid, with void borders."""
    for _ in range(num):
        labels = np.zeros((4, 16, 16), np.int32)
        for b in range(4):
            for c in (1, 2):
                r, q = rng.integers(2, 12, size=2)
                s = rng.integers(2, 6)
                labels[b, r : r + s, q : q + s] = c
        labels[:, 0, :] = 255
        yield {"image": labels, "label": labels}


def test_generate_pairs_and_fit():
    rng = np.random.default_rng(0)

    def logits_fn(images):  # a "trained model": right everywhere, with some confusion
        onehot = jax.nn.one_hot(jnp.where(images == 255, 0, images), 3)
        return 3.0 * onehot + jax.random.normal(jax.random.key(7), onehot.shape)

    x, y = fitting.generate_pairs(
        logits_fn, _synthetic_batches(8, rng), kind="prob", num_inputs=6, num_perturbations=5
    )
    assert x.shape[1] == 6 and x.shape[0] == y.shape[0] > 300
    assert np.all((y >= 0) & (y <= 1))
    # the perturbations spread the targets over the IoU range
    assert y.min() < 0.15 and y.max() > 0.85 and y.std() > 0.15
    sur = fitting.fit_surrogate(
        x, y, kind="prob", hidden=(16, 16), steps=600, batch_size=128, learning_rate=1e-2,
        val_fraction=0.2,
    )
    m = sur.metrics
    assert m["val_mse"] < 0.3 * m["val_baseline_mse"], m
    assert sur.num_inputs == 6 and sur.kind == "prob"
    assert len(sur.feature_mean) == 6 and min(sur.feature_scale) > 0
    # the fitted loss follows the true IoU loss on fresh data
    xt, yt = fitting.generate_pairs(
        logits_fn, _synthetic_batches(2, np.random.default_rng(9)), num_perturbations=5, seed=3
    )
    pred = np.asarray(sur(jnp.asarray(xt)))
    assert np.corrcoef(pred, yt)[0, 1] > 0.8
    with pytest.raises(ValueError, match="3 or 6 features"):
        fitting.fit_surrogate(x[:, :2], y)


def test_gradient_agreement_of_hand_made_surrogates(batch):
    """A linear surrogate -TP_pr + FP_pr - FN_pr moves every mispredicted pixel the right way."""
    logits, labels = batch
    labels = labels[:2]
    logits = logits[:2]
    template = neuroiou.init_surrogate(jax.random.key(0), hidden=(), num_inputs=3)
    kernel = np.array([[-1.0], [1.0], [-1.0]], np.float32)
    good = neuroiou.Surrogate(
        {"out": {"kernel": kernel, "bias": np.zeros(1, np.float32)}}, (), "softplus", "prob", 3
    )
    assert jax.tree_util.tree_structure(good.params) == jax.tree_util.tree_structure(
        jax.tree_util.tree_map(np.asarray, template.params)
    )
    a = fitting.gradient_agreement(good, logits, labels)
    assert a["num_pixels"] > 10
    assert a["fn_agreement"] == 1.0 and a["fp_agreement"] == 1.0
    bad = neuroiou.Surrogate(
        {"out": {"kernel": -kernel, "bias": np.zeros(1, np.float32)}}, (), "softplus", "prob", 3
    )
    a = fitting.gradient_agreement(bad, logits, labels)
    assert a["fn_agreement"] == 0.0 and a["fp_agreement"] == 0.0


def test_batch_gradient_agreement_pools_pixels_and_leaves_out_padding(batch):
    """Over batches: the pixels of every real image once (padding examples left out, batches
    after ``max_batches`` not read), as one call on those images would count them."""
    logits, labels = batch
    sur = neuroiou.init_surrogate(jax.random.key(3), hidden=(4,), kind="prob", num_inputs=3)
    batches = [
        {"image": logits[:1], "label": labels[:1]},
        # image 0 again as a padding example of the last, incomplete batch
        {"image": logits[[1, 0]], "label": labels[[1, 0]], "example_mask": np.array([True, False])},
        {"image": logits[:1], "label": labels[:1]},  # past max_batches
    ]
    got = fitting.batch_gradient_agreement(sur, lambda x: x, iter(batches), max_batches=2)
    want = fitting.gradient_agreement(sur, logits[:2], labels[:2])
    assert want["num_pixels"] > 10 and 0.0 < want["fp_agreement"] < 1.0, want  # not all alike
    assert got == pytest.approx(want)
    void = [{"image": logits[2:], "label": labels[2:]}]  # no valid pixel
    none = fitting.batch_gradient_agreement(sur, lambda x: x, void)
    assert none["num_pixels"] == 0 and np.isnan(none["fn_agreement"])
