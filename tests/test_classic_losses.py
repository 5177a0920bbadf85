"""Tests of the baseline losses against float64 NumPy references written from the formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses import classic
from jaxseg.losses.registry import build_loss

IGNORE = 255


# ----------------------------------------------------------------------------------------------
# float64 NumPy references, written from the docstring formulas (loops over images and classes)
# ----------------------------------------------------------------------------------------------


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _valid(y, num_classes):
    return (y != IGNORE) & (y >= 0) & (y < num_classes)


def ref_cross_entropy(x, y, class_weights=None, label_smoothing=0.0):
    c = x.shape[-1]
    logp = _log_softmax(x).reshape(-1, c)
    y = y.reshape(-1)
    w = np.ones(c) if class_weights is None else np.asarray(class_weights, np.float64)
    num, den = 0.0, 0.0
    for i in range(y.size):
        if not _valid(y[i], c):
            continue
        num += (1 - label_smoothing) * w[y[i]] * -logp[i, y[i]]
        num += label_smoothing / c * np.sum(w * -logp[i])
        den += w[y[i]]
    return num / den if den > 0 else 0.0


def ref_focal(x, y, gamma=2.0, alpha=None):
    c = x.shape[-1]
    logp = _log_softmax(x).reshape(-1, c)
    y = y.reshape(-1)
    total, n = 0.0, 0
    for i in range(y.size):
        if not _valid(y[i], c):
            continue
        pt = np.exp(logp[i, y[i]])
        a = 1.0 if alpha is None else (alpha if np.ndim(alpha) == 0 else alpha[y[i]])
        total += -a * (1 - pt) ** gamma * logp[i, y[i]]
        n += 1
    return total / n if n else 0.0


def ref_hinge(x, y, margin=1.0):
    c = x.shape[-1]
    xf = np.asarray(x, np.float64).reshape(-1, c)
    y = y.reshape(-1)
    total, n = 0.0, 0
    for i in range(y.size):
        if not _valid(y[i], c):
            continue
        for k in range(c):
            s = 1.0 if k == y[i] else -1.0
            total += max(0.0, margin - s * xf[i, k])
        n += 1
    return total / n if n else 0.0


def ref_binary_hinge(x, y, margin=1.0):
    xf = np.asarray(x, np.float64).reshape(-1)
    y = y.reshape(-1)
    v = (y == 0) | (y == 1)
    if not v.any():
        return 0.0
    s = 2.0 * y[v] - 1.0
    return np.mean(np.maximum(0.0, margin - s * xf[v]))


def ref_bce(x, y, pos_weight=None):
    xf = np.asarray(x, np.float64).reshape(-1)
    y = y.reshape(-1)
    v = (y == 0) | (y == 1)
    if not v.any():
        return 0.0
    sig = 1.0 / (1.0 + np.exp(-xf[v]))
    pw = 1.0 if pos_weight is None else pos_weight
    yy = y[v].astype(np.float64)
    return np.mean(-(pw * yy * np.log(sig) + (1 - yy) * np.log(1 - sig)))


def ref_region(x, y, kind, per_image=False, classes="present", smooth=None, alpha=0.5, beta=0.5,
               class_weights=None):
    """Dice / Tversky / Jaccard from the textbook formulas, one class and one image at a time."""
    c = x.shape[-1]
    p = np.exp(_log_softmax(x))
    groups = [(slice(b, b + 1),) for b in range(x.shape[0])] if per_image else [(slice(None),)]
    losses = []
    for g in groups:
        pg, yg = p[g].reshape(-1, c), y[g].reshape(-1)
        v = _valid(yg, c)
        pg, yg = pg[v], yg[v]
        num, den = 0.0, 0.0
        for k in range(c):
            gt = (yg == k).astype(np.float64)
            pk = pg[:, k]
            if classes == "present":
                if gt.sum() == 0:
                    continue
            elif classes != "all" and k not in classes:
                continue
            w = 1.0 if class_weights is None else class_weights[k]
            if kind == "dice":
                s = 1.0 if smooth is None else smooth
                a, b_ = 2 * np.sum(pk * gt) + s, np.sum(pk) + np.sum(gt) + s
            elif kind == "tversky":
                s = 1.0 if smooth is None else smooth
                tp = np.sum(pk * gt)
                a = tp + s
                b_ = tp + alpha * np.sum(pk * (1 - gt)) + beta * np.sum((1 - pk) * gt) + s
            else:  # Rahman & Wang's IoU-Appx
                s = 0.0 if smooth is None else smooth
                a, b_ = np.sum(pk * gt) + s, np.sum(pk + gt - pk * gt) + s
            score = a / b_ if b_ != 0 else 1.0
            num += w * (1 - score)
            den += w
        losses.append(num / den if den > 0 else 0.0)
    return float(np.mean(losses))


REGION = {
    "dice": classic.soft_dice_loss,
    "tversky": classic.tversky_loss,
    "jaccard": classic.soft_jaccard_loss,
}


def _region_pair(kind, **kw):
    return functools.partial(REGION[kind], **kw), functools.partial(ref_region, kind=kind, **kw)


# (name, jax loss, reference, binary?)
CASES = [
    ("ce", classic.cross_entropy, ref_cross_entropy, False),
    ("ce_weighted_smoothed",
     functools.partial(classic.cross_entropy, class_weights=np.array([0.5, 2.0, 1.0, 3.0]),
                       label_smoothing=0.1),
     functools.partial(ref_cross_entropy, class_weights=[0.5, 2.0, 1.0, 3.0], label_smoothing=0.1),
     False),
    ("focal", classic.focal_loss, ref_focal, False),
    ("focal_alpha_gamma",
     functools.partial(classic.focal_loss, gamma=1.5, alpha=np.array([0.25, 1.0, 0.5, 2.0])),
     functools.partial(ref_focal, gamma=1.5, alpha=np.array([0.25, 1.0, 0.5, 2.0])), False),
    ("hinge", classic.hinge_loss, ref_hinge, False),
    ("dice", *_region_pair("dice"), False),
    ("dice_image_all_nosmooth", *_region_pair("dice", per_image=True, classes="all", smooth=0.0),
     False),
    ("tversky", *_region_pair("tversky", alpha=0.3, beta=0.7), False),
    ("tversky_image_list",
     *_region_pair("tversky", alpha=0.7, beta=0.3, per_image=True, classes=(0, 2), smooth=0.5),
     False),
    ("jaccard", *_region_pair("jaccard"), False),
    ("jaccard_all_weighted",
     *_region_pair("jaccard", classes="all", class_weights=np.array([1.0, 0.0, 2.0, 0.5])), False),
    ("jaccard_image", *_region_pair("jaccard", per_image=True, smooth=1.0), False),
    ("binary_hinge", classic.binary_hinge_loss, ref_binary_hinge, True),
    ("bce", classic.binary_cross_entropy, ref_bce, True),
    ("bce_pos_weight", functools.partial(classic.binary_cross_entropy, pos_weight=3.0),
     functools.partial(ref_bce, pos_weight=3.0), True),
]
IDS = [c[0] for c in CASES]


def _data(seed=0, shape=(2, 3, 4), num_classes=4, binary=False, void_fraction=0.2, scale=2.0):
    rng = np.random.default_rng(seed)
    k = 2 if binary else num_classes
    labels = rng.integers(0, k, size=shape)
    labels[rng.random(shape) < void_fraction] = IGNORE
    if not binary and shape[0] > 1:
        labels[1][labels[1] == 1] = 0  # class 1 absent from image 1: exercises "present" per image
    logits_shape = shape if binary else shape + (num_classes,)
    logits = (scale * rng.normal(size=logits_shape)).astype(np.float32)
    return logits, labels.astype(np.int32)


def _fd_grad(f, x, h=1e-6):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


# ----------------------------------------------------------------------------------------------
# Values and gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,loss,ref,binary", CASES, ids=IDS)
def test_value_matches_float64_reference(name, loss, ref, binary):
    for seed in range(3):
        logits, labels = _data(seed, binary=binary)
        got = loss(jnp.asarray(logits), jnp.asarray(labels))
        assert got.dtype == jnp.float32 and got.shape == ()
        np.testing.assert_allclose(float(got), ref(logits, labels), rtol=2e-6, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("name,loss,ref,binary", CASES, ids=IDS)
def test_gradient_matches_finite_differences(name, loss, ref, binary):
    logits, labels = _data(7, binary=binary)
    got = np.asarray(jax.grad(loss)(jnp.asarray(logits), jnp.asarray(labels)), np.float64)
    want = _fd_grad(lambda z: ref(z, labels), logits)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=name)
    # ignored pixels receive no gradient
    void = labels == IGNORE
    assert np.all(got[void] == 0)


@pytest.mark.parametrize("name,loss,ref,binary", CASES, ids=IDS)
def test_all_ignored_gives_zero_and_zero_gradient(name, loss, ref, binary):
    logits, labels = _data(3, binary=binary)
    labels = np.full_like(labels, IGNORE)
    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(logits), jnp.asarray(labels))
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("name,loss,ref,binary", CASES, ids=IDS)
def test_bfloat16_and_huge_logits_are_finite(name, loss, ref, binary):
    logits, labels = _data(4, binary=binary)
    f32 = float(loss(jnp.asarray(logits), jnp.asarray(labels)))
    bf16_logits = jnp.asarray(logits, jnp.bfloat16)
    value, grad = jax.value_and_grad(loss)(bf16_logits, jnp.asarray(labels))
    assert value.dtype == jnp.float32  # float32 accumulation
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad, np.float32)))
    # bfloat16 rounding of the inputs only (relative 2^-8 on logits of size ~2)
    np.testing.assert_allclose(float(value), f32, rtol=0.05, atol=0.02)

    huge = jnp.asarray(np.sign(logits) * 1e4, jnp.float32)
    value, grad = jax.value_and_grad(loss)(huge, jnp.asarray(labels))
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


# ----------------------------------------------------------------------------------------------
# Specific properties
# ----------------------------------------------------------------------------------------------


def test_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    logits, labels = _data(11, shape=(2, 5, 6), num_classes=5)
    weights = np.array([0.2, 1.0, 3.0, 0.7, 1.5], np.float32)
    t_logits = torch.from_numpy(logits.astype(np.float64)).permute(0, 3, 1, 2)
    t_labels = torch.from_numpy(labels.astype(np.int64))
    for w, eps in [(None, 0.0), (weights, 0.0), (None, 0.2), (weights, 0.2)]:
        want = tf.cross_entropy(t_logits, t_labels, ignore_index=IGNORE, label_smoothing=eps,
                                weight=None if w is None else torch.from_numpy(w).double())
        got = classic.cross_entropy(logits, labels, class_weights=w, label_smoothing=eps)
        np.testing.assert_allclose(float(got), want.item(), rtol=2e-6)


def test_binary_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    logits, labels = _data(12, binary=True)
    valid = labels != IGNORE
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits[valid].astype(np.float64)),
        torch.from_numpy(labels[valid].astype(np.float64)),
        pos_weight=torch.tensor(2.5, dtype=torch.float64))
    got = classic.binary_cross_entropy(logits, labels, pos_weight=2.5)
    np.testing.assert_allclose(float(got), want.item(), rtol=2e-6)


def test_optax_integer_ce_would_be_nan_but_ours_is_not():
    import optax  # pylint: disable=import-outside-toplevel
    logits, labels = _data(2)
    raw = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(labels))
    assert not np.all(np.isfinite(np.asarray(raw)))  # optax gives NaN at the void label 255
    assert np.isfinite(float(classic.cross_entropy(logits, labels)))


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, labels = _data(5)
    np.testing.assert_allclose(float(classic.focal_loss(logits, labels, gamma=0.0)),
                               float(classic.cross_entropy(logits, labels)), rtol=1e-6)


def test_tversky_special_cases_are_dice_and_jaccard():
    logits, labels = _data(6)
    for per_image in (False, True):
        np.testing.assert_allclose(
            float(classic.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=0.5,
                                       per_image=per_image)),
            float(classic.soft_dice_loss(logits, labels, smooth=1.0, per_image=per_image)),
            rtol=1e-6)
        np.testing.assert_allclose(
            float(classic.tversky_loss(logits, labels, alpha=1.0, beta=1.0, smooth=0.0,
                                       per_image=per_image)),
            float(classic.soft_jaccard_loss(logits, labels, per_image=per_image)), rtol=1e-6)


@pytest.mark.parametrize("kind", sorted(REGION))
def test_per_image_is_mean_of_single_image_losses(kind):
    loss = REGION[kind]
    logits, labels = _data(8, shape=(3, 3, 4))
    labels[2] = IGNORE  # an image with no valid pixel counts as 0 in the mean
    per_image = float(loss(logits, labels, per_image=True))
    singles = [float(loss(logits[b:b + 1], labels[b:b + 1])) for b in range(3)]
    assert singles[2] == 0.0
    np.testing.assert_allclose(per_image, np.mean(singles), rtol=1e-6)


@pytest.mark.parametrize("kind", sorted(REGION))
def test_region_losses_vanish_on_confident_correct_prediction(kind):
    _, labels = _data(9)
    logits = 50.0 * jax.nn.one_hot(np.where(labels == IGNORE, 0, labels), 4)
    assert float(REGION[kind](logits, labels, smooth=0.0)) < 1e-6
    assert float(REGION[kind](logits, labels, smooth=0.0, classes="all")) < 1e-6


def test_out_of_range_labels_are_ignored():
    logits, labels = _data(10)
    odd = labels.copy()
    odd[labels == IGNORE] = 7  # neither a class nor ignore_index
    for name, loss, _, binary in CASES:
        if binary:
            continue
        np.testing.assert_allclose(float(loss(logits, odd)), float(loss(logits, labels)),
                                   rtol=1e-6, err_msg=name)


def test_custom_ignore_index_and_uint8_labels():
    logits, labels = _data(13)
    other = np.where(labels == IGNORE, -100, labels)
    np.testing.assert_allclose(
        float(classic.cross_entropy(logits, other, ignore_index=-100)),
        float(classic.cross_entropy(logits, labels.astype(np.uint8))), rtol=1e-6)


def test_weighted_ce_with_zero_weight_pixels_only_is_zero():
    logits, labels = _data(14)
    labels = np.where(labels == IGNORE, IGNORE, 2)
    w = np.array([1.0, 1.0, 0.0, 1.0])
    value, grad = jax.value_and_grad(classic.cross_entropy)(jnp.asarray(logits), labels,
                                                            class_weights=w)
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


def test_enet_class_weights():
    counts = np.array([700.0, 200.0, 90.0, 10.0])
    w = classic.enet_class_weights(counts)
    np.testing.assert_allclose(w, 1.0 / np.log(1.02 + counts / counts.sum()), rtol=1e-6)
    assert w.dtype == np.float32 and np.all(np.diff(w) > 0)  # rarer -> heavier
    np.testing.assert_allclose(classic.enet_class_weights([0.0, 1.0])[0], 1 / np.log(1.02),
                               rtol=1e-6)
    for bad, kw in [([[1.0, 2.0]], {}), ([1.0, -1.0], {}), ([0.0, 0.0], {}), ([1.0], {"c": 1.0})]:
        with pytest.raises(ValueError, match="enet_class_weights"):
            classic.enet_class_weights(bad, **kw)


def test_jit_vmap_and_registry():
    logits, labels = _data(15)
    ce = jax.jit(classic.cross_entropy)(logits, labels)
    # vmap over an extra leading axis of batches
    stacked = jax.vmap(classic.soft_dice_loss)(jnp.stack([logits, logits]),
                                               jnp.stack([labels, labels]))
    np.testing.assert_allclose(np.asarray(stacked),
                               float(classic.soft_dice_loss(logits, labels)), rtol=1e-6)
    built = build_loss({"name": "cross_entropy",
                        "kwargs": {"class_weights": [1.0, 2.0, 1.0, 1.0]}})
    np.testing.assert_allclose(
        float(built(logits, labels)),
        ref_cross_entropy(logits, labels, class_weights=[1.0, 2.0, 1.0, 1.0]), rtol=2e-6)
    combo = build_loss({"terms": [{"name": "cross_entropy", "weight": 1.0},
                                  {"name": "soft_jaccard", "weight": 0.5,
                                   "kwargs": {"classes": [0, 2]}}]})
    np.testing.assert_allclose(
        float(combo(logits, labels)),
        float(ce) + 0.5 * ref_region(logits, labels, "jaccard", classes=(0, 2)), rtol=2e-6)
    for name in ["cross_entropy", "focal", "soft_dice", "tversky", "soft_jaccard", "hinge",
                 "binary_hinge", "binary_cross_entropy"]:
        assert callable(build_loss({"name": name}))


def test_binary_losses_accept_trailing_singleton_channel():
    logits, labels = _data(16, binary=True)
    for loss in (classic.binary_cross_entropy, classic.binary_hinge_loss):
        np.testing.assert_allclose(float(loss(logits[..., None], labels)),
                                   float(loss(logits, labels)), rtol=1e-7)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [classic.cross_entropy, classic.focal_loss, classic.hinge_loss,
                                  classic.soft_dice_loss, classic.tversky_loss,
                                  classic.soft_jaccard_loss])
def test_multiclass_input_errors(loss):
    logits, labels = _data(0)
    with pytest.raises(ValueError, match="rank 4"):
        loss(logits[0], labels)
    with pytest.raises(ValueError, match="rank 3"):
        loss(logits, labels[..., None])
    with pytest.raises(ValueError, match="does not match"):
        loss(logits, labels[:, :2])
    with pytest.raises(TypeError, match="integer"):  # a dtype: TypeError (jaxseg._validation)
        loss(logits, labels.astype(np.float32))
    with pytest.raises(TypeError, match="floating"):
        loss(logits.astype(np.int32), labels)


@pytest.mark.parametrize("loss", [classic.binary_cross_entropy, classic.binary_hinge_loss])
def test_binary_input_errors(loss):
    logits, labels = _data(0, binary=True)
    with pytest.raises(ValueError, match=r"\[B, H, W\] or \[B, H, W, 1\]"):
        loss(logits[0], labels)
    with pytest.raises(ValueError, match="does not match"):
        loss(logits, labels[:, :2])
    with pytest.raises(TypeError, match="integer"):
        loss(logits, labels.astype(bool))


def test_option_errors():
    logits, labels = _data(0)
    with pytest.raises(ValueError, match="class_weights must be a vector of length C = 4"):
        classic.cross_entropy(logits, labels, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        classic.cross_entropy(logits, labels, class_weights=[1.0, -2.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="label_smoothing"):
        classic.cross_entropy(logits, labels, label_smoothing=1.5)
    with pytest.raises(ValueError, match="gamma"):
        classic.focal_loss(logits, labels, gamma=-1.0)
    with pytest.raises(ValueError, match="classes"):
        classic.soft_dice_loss(logits, labels, classes="some")
    with pytest.raises(ValueError, match="out of range"):
        classic.soft_jaccard_loss(logits, labels, classes=(0, 4))
    with pytest.raises(ValueError, match="alpha"):
        classic.tversky_loss(logits, labels, alpha=-0.1)


# ----------------------------------------------------------------------------------------------
# Fuzzing: finite, non-negative values and finite gradients on extreme inputs
# ----------------------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


_FUZZ_SHAPE = (2, 2, 3, 4)
# one case per loss, with its options switched on (each is compiled once per dtype)
_FUZZ_CASES = ("ce_weighted_smoothed", "focal_alpha_gamma", "hinge", "dice_image_all_nosmooth",
               "tversky_image_list", "jaccard_all_weighted", "binary_hinge", "bce_pos_weight")


@st.composite
def _extreme_inputs(draw):
    n = int(np.prod(_FUZZ_SHAPE[:3]))
    magnitude = draw(st.sampled_from([1.0, 30.0, 1e4]))
    values = draw(st.lists(st.floats(-magnitude, magnitude, allow_nan=False, width=32),
                           min_size=n * 4, max_size=n * 4))
    labels = draw(st.lists(st.sampled_from([0, 1, 2, 3, IGNORE]), min_size=n, max_size=n))
    dtype = draw(st.sampled_from(["float32", "bfloat16"]))
    logits = np.array(values, np.float32).reshape(_FUZZ_SHAPE)
    return logits, np.array(labels, np.int32).reshape(_FUZZ_SHAPE[:3]), dtype


@functools.lru_cache(maxsize=None)
def _jitted_value_and_grad(name):
    loss = {case[0]: case[1] for case in CASES}[name]
    return jax.jit(jax.value_and_grad(loss))


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
@hypothesis.given(_extreme_inputs())
def test_fuzz_finite_values_and_gradients(inputs):
    logits, labels, dtype = inputs
    logits = jnp.asarray(logits, dtype)
    binary_labels = np.where(labels == IGNORE, IGNORE, labels % 2)
    for name, _, _, binary in CASES:
        if name not in _FUZZ_CASES:
            continue
        x, y = (logits[..., 0], binary_labels) if binary else (logits, labels)
        value, grad = _jitted_value_and_grad(name)(x, y)
        assert np.isfinite(float(value)) and float(value) >= 0, name
        assert np.all(np.isfinite(np.asarray(grad, np.float32))), name


@pytest.mark.parametrize("name,loss,ref,binary", CASES, ids=IDS)
def test_single_pixel(name, loss, ref, binary):
    """One pixel (one valid pixel: where the Lovász reference crashes) matches the reference."""
    logits, labels = _data(17, shape=(1, 1, 1), binary=binary, void_fraction=0.0)
    value, grad = jax.value_and_grad(loss)(jnp.asarray(logits), labels)
    np.testing.assert_allclose(float(value), ref(logits, labels), rtol=2e-6, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(grad)))
