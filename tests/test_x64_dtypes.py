"""One output-dtype rule, with JAX's global 64-bit mode (``jax_enable_x64``) off and on, for every
loss (the Lovász and PixIoU losses aside) and every metric.

A loss computes in ``promote_types(logits.dtype, float32)`` and returns a scalar of exactly that
dtype, its gradient has the logits' dtype; with x64 on, float32 inputs give the same float32
value as with x64 off, float64 inputs really compute in float64 (checked against float64 NumPy at
1e-12), and no 64-bit value is created on the way (integer counts stay int32). The metrics keep
their documented dtypes and values with x64 on.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core
from x64_mode import global_x64

from jaxseg import metrics as m
from jaxseg.losses import classic, margin, neuroiou
from jaxseg.losses.registry import build_loss

IGNORE = 255
C = 4
COUNTS = [5000, 300, 40, 1200]  # per-class pixel counts of a made-up training split




@pytest.fixture
def x64_mode(request):
    """Global x64 off (forced, then restored) or on (conftest's ``x64`` fixture)."""
    if request.param:
        request.getfixturevalue("x64")
        yield True
    else:
        with global_x64(False):
            yield False


def _data():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(2, 5, 6, C)) * 2.0).astype(np.float64)
    labels = rng.integers(0, C, size=(2, 5, 6)).astype(np.int32)
    labels[0, :2] = IGNORE
    binary = (labels % 2).astype(np.int32)
    binary[labels == IGNORE] = IGNORE
    return logits, labels, binary


LOGITS, LABELS, BINARY = _data()
CLASS_W = np.array([1.0, 2.5, 0.5, 3.0])


@functools.lru_cache(maxsize=None)
def _surrogates():
    prob6 = neuroiou.init_surrogate(jax.random.key(0), hidden=(8, 8), kind="prob", num_inputs=6)
    hinge3 = neuroiou.init_surrogate(jax.random.key(1), hidden=(8,), activation="tanh",
                                     kind="hinge", num_inputs=3)
    hinge3 = neuroiou.Surrogate(hinge3.params, hinge3.hidden, hinge3.activation, hinge3.kind,
                                hinge3.num_inputs, feature_mean=(0.1, 0.2, 0.05),
                                feature_scale=(0.5, 0.3, 0.2))
    return prob6, hinge3


@functools.lru_cache(maxsize=None)
def _loss_table():
    """name -> (loss_fn(logits, labels), binary head); built once, outside any trace."""
    prob6, hinge3 = _surrogates()
    return {
        "cross_entropy": (classic.cross_entropy, False),
        "cross_entropy_weighted_smoothed": (functools.partial(
            classic.cross_entropy, class_weights=CLASS_W, label_smoothing=0.1), False),
        "focal": (functools.partial(classic.focal_loss, alpha=CLASS_W), False),
        "soft_dice": (classic.soft_dice_loss, False),
        "soft_dice_per_image_all": (functools.partial(
            classic.soft_dice_loss, per_image=True, classes="all"), False),
        "tversky": (functools.partial(classic.tversky_loss, alpha=0.3, beta=0.7,
                                      class_weights=CLASS_W), False),
        "soft_jaccard_per_image": (functools.partial(classic.soft_jaccard_loss, per_image=True),
                                   False),
        "hinge": (classic.hinge_loss, False),
        "binary_hinge": (classic.binary_hinge_loss, True),
        "binary_cross_entropy": (functools.partial(classic.binary_cross_entropy, pos_weight=2.0),
                                 True),
        "margin_calibration": (build_loss({"name": "margin_calibration",
                                           "kwargs": {"class_pixel_counts": COUNTS}}), False),
        "neuroiou_prob6": (functools.partial(neuroiou.neuroiou_loss, surrogate=prob6), False),
        "neuroiou_hinge3_standardised": (functools.partial(neuroiou.neuroiou_loss,
                                                           surrogate=hinge3), False),
        "weighted_sum": (build_loss({"terms": [
            {"name": "cross_entropy", "weight": 1.0},
            {"name": "soft_dice", "weight": 0.5},
            {"name": "margin_calibration", "weight": 0.25,
             "kwargs": {"class_pixel_counts": COUNTS}}]}), False),
    }


LOSS_NAMES = [
    "cross_entropy", "cross_entropy_weighted_smoothed", "focal", "soft_dice",
    "soft_dice_per_image_all", "tversky", "soft_jaccard_per_image", "hinge", "binary_hinge",
    "binary_cross_entropy", "margin_calibration", "neuroiou_prob6",
    "neuroiou_hinge3_standardised", "weighted_sum",
]


def test_loss_names_cover_the_table():
    assert sorted(_loss_table()) == sorted(LOSS_NAMES)


def _inputs(name, dtype):
    x = LOGITS[..., 0] if _loss_table()[name][1] else LOGITS
    return jnp.asarray(x, dtype)


@jax.jit
def _all_values_and_grads(logits, binary_logits):
    """``{name: (value, grad)}`` of every loss: one compilation per (x64 mode, dtype), not one per
    loss (XLA's compile time dominates this file)."""
    out = {}
    for name, (fn, binary) in _loss_table().items():
        labels = BINARY if binary else LABELS
        out[name] = jax.value_and_grad(lambda x, f=fn, y=labels: f(x, y))(
            binary_logits if binary else logits)
    return out


@functools.lru_cache(maxsize=None)
def _results_cached(x64_on, dtype_name):
    del x64_on  # part of the cache key: jit retraces when the mode changes
    dtype = jnp.dtype(dtype_name)
    return _all_values_and_grads(jnp.asarray(LOGITS, dtype), jnp.asarray(LOGITS[..., 0], dtype))


def _value_and_grad(name, dtype):
    """(value, grad) of loss ``name`` for logits of ``dtype`` in the current x64 mode."""
    _loss_table()  # build the surrogates outside the trace
    results = _results_cached(bool(jax.config.jax_enable_x64), jnp.dtype(dtype).name)
    return results[name]


def _expected_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


# ----------------------------------------------------------------------------------------------
# Losses: value and gradient dtypes
# ----------------------------------------------------------------------------------------------

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32]
# (x64 mode, input dtype); float64 arrays exist only under x64
MODES_AND_DTYPES = [pytest.param(False, d, id=f"x32-{jnp.dtype(d).name}") for d in DTYPES] + [
    pytest.param(True, d, id=f"x64-{jnp.dtype(d).name}") for d in DTYPES + [jnp.float64]]


@pytest.mark.parametrize("x64_mode,dtype", MODES_AND_DTYPES, indirect=["x64_mode"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_value_and_gradient_dtypes(name, x64_mode, dtype):
    assert bool(jax.config.jax_enable_x64) == x64_mode
    assert _inputs(name, dtype).dtype == dtype
    value, grad = _value_and_grad(name, dtype)
    assert value.shape == ()
    assert value.dtype == _expected_dtype(dtype), (name, dtype, value.dtype)
    assert grad.dtype == dtype, (name, dtype, grad.dtype)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad, np.float64)))
    assert np.any(np.asarray(grad, np.float64) != 0)


# One loss per code path, for the slow eager (op by op) tests.
EAGER_NAMES = ["cross_entropy_weighted_smoothed", "focal", "tversky", "hinge",
               "binary_cross_entropy", "margin_calibration", "neuroiou_hinge3_standardised",
               "weighted_sum"]


def test_eager_numpy_float32_inputs_under_x64(x64):
    """Not jitted, NumPy logits: the same rule (NumPy arithmetic must not leak float64)."""
    dtype = np.float32
    for name in EAGER_NAMES:
        fn, binary = _loss_table()[name]
        x = (LOGITS[..., 0] if binary else LOGITS).astype(dtype)
        value = fn(x, BINARY if binary else LABELS)
        assert value.dtype == _expected_dtype(dtype), (name, value.dtype)


def test_numpy_float64_inputs_without_x64_compute_in_float32():
    """Without x64, float64 NumPy logits are float32 to JAX: float32 result, no warning."""
    with global_x64(False):
        for name in EAGER_NAMES:
            fn, binary = _loss_table()[name]
            x = LOGITS[..., 0] if binary else LOGITS
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                value = fn(x, BINARY if binary else LABELS)
            assert value.dtype == jnp.float32, (name, value.dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_x64_float32_matches_x32(name, dtype, x64):
    value, grad = _value_and_grad(name, dtype)
    with global_x64(False):
        want_value, want_grad = _value_and_grad(name, dtype)
    assert want_value.dtype == value.dtype and want_grad.dtype == grad.dtype
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6, atol=0)
    g, wg = np.asarray(grad, np.float64), np.asarray(want_grad, np.float64)
    np.testing.assert_allclose(g, wg, rtol=1e-5, atol=1e-6 * np.abs(wg).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_weighted_sum_casts_each_term(dtype, x64, monkeypatch):
    """A term that breaks the rule (here float64, or the input's own low precision) does not make
    the weighted sum break it."""
    from jaxseg.losses import registry

    def mean_in_float64(logits, labels):  # float64 even for float32 logits
        del labels
        return jnp.mean(logits.astype(jnp.float64))

    def mean_as_given(logits, labels):  # float16 / bfloat16 for such logits
        del labels
        return jnp.mean(logits)

    monkeypatch.setitem(registry._BUILDERS, "x64_probe_f64", lambda: mean_in_float64)
    monkeypatch.setitem(registry._BUILDERS, "x64_probe_raw", lambda: mean_as_given)
    loss = build_loss({"terms": [{"name": "x64_probe_f64", "weight": 1.0},
                                 {"name": "x64_probe_raw", "weight": 0.5},
                                 {"name": "cross_entropy", "weight": 2.0}]})
    x = jnp.asarray(LOGITS, dtype)
    value, grad = jax.value_and_grad(lambda f: loss(f, LABELS))(x)
    assert value.dtype == jnp.float32 and grad.dtype == dtype
    want = (1.5 * np.mean(np.asarray(x, np.float64))
            + 2.0 * float(classic.cross_entropy(x, LABELS)))
    np.testing.assert_allclose(float(value), want, rtol=1e-2 if dtype != jnp.float32 else 1e-6)


def _walk(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, jax_core.ClosedJaxpr):
                    yield from _walk(sub.jaxpr)
                elif isinstance(sub, jax_core.Jaxpr):
                    yield from _walk(sub)


def _strong_64bit(fn, *args):
    """Equations of ``fn``'s jaxpr (sub-jaxprs included) with a 64-bit, not weakly typed output."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return sorted({
        f"{eqn.primitive.name} -> {v.aval.dtype}{list(v.aval.shape)}"
        for eqn in _walk(jaxpr) for v in eqn.outvars
        if getattr(v.aval, "dtype", None) is not None and v.aval.dtype.itemsize == 8
        and not getattr(v.aval, "weak_type", False)
    })


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_no_64bit_value_for_float32_inputs_under_x64(name, x64):
    """Integer counts stay int32 and nothing is promoted to float64 (value and gradient)."""
    fn, binary = _loss_table()[name]
    labels = BINARY if binary else LABELS
    found = _strong_64bit(jax.value_and_grad(lambda x: fn(x, labels)),
                          _inputs(name, jnp.float32))
    assert not found, (name, found)


# ----------------------------------------------------------------------------------------------
# float64 inputs compute in float64: independent NumPy references
# ----------------------------------------------------------------------------------------------


def _np_log_softmax(x):
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def _np_valid(labels, num_classes):
    return (labels != IGNORE) & (labels >= 0) & (labels < num_classes)


def np_cross_entropy(x, y, w=None, eps=0.0):
    c = x.shape[-1]
    w = np.ones(c) if w is None else w
    v = _np_valid(y, c)
    lp, yv = _np_log_softmax(x[v]), y[v]
    nll = -lp[np.arange(len(yv)), yv]
    per = (1 - eps) * w[yv] * nll + eps / c * np.sum(-lp * w, axis=-1)
    return per.sum() / w[yv].sum()


def np_soft_dice(x, y, per_image=False, classes="present", smooth=1.0):
    c = x.shape[-1]

    def one(xb, yb):
        v = _np_valid(yb, c)
        p = np.exp(_np_log_softmax(xb[v]))
        g = np.eye(c)[yb[v]]
        tp, fp, fn = (p * g).sum(0), (p * (1 - g)).sum(0), ((1 - p) * g).sum(0)
        dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
        sel = g.sum(0) > 0 if classes == "present" else np.ones(c, bool)
        return (1 - dice)[sel].mean() if sel.any() else 0.0

    if per_image:
        return np.mean([one(x[b], y[b]) for b in range(x.shape[0])])
    return one(x, y)


def np_binary_cross_entropy(f, y, pos_weight=1.0):
    v = _np_valid(y, 2)
    f, yv = f[v], y[v].astype(np.float64)
    return np.mean(pos_weight * yv * _np_softplus(-f) + (1 - yv) * _np_softplus(f))


def np_margin(x, y, r0, r1):
    c = x.shape[-1]
    v = _np_valid(y, c)
    f, yv = x[v], y[v]
    total = 0.0
    for row, k in zip(f, yv):
        gamma = np.array([row[j] - np.max(np.delete(row, j)) for j in range(c)])
        term = c * _np_softplus(-(gamma[k] - r1[k]))
        term += sum(_np_softplus(gamma[j] + r0[j]) for j in range(c) if j != k)
        total += term / c
    return total / len(yv)


def np_neuroiou(x, y, surrogate):
    """Features of every (image, class) pair, the MLP in float64 NumPy, mean over kept pairs."""
    c = x.shape[-1]
    rows = []
    for b in range(x.shape[0]):
        v = y[b] != IGNORE
        f, yb = x[b][v], y[b][v]
        n = max(len(yb), 1)
        prob = np.exp(_np_log_softmax(f))
        pred = f.argmax(-1)
        for k in range(c):
            sets = [(pred == k) & (yb == k), (pred == k) & (yb != k), (pred != k) & (yb == k)]
            if not sum(s.sum() for s in sets):
                continue
            if surrogate.kind == "prob":
                val = prob[:, k]
            else:
                val = np.maximum(0.0, 1.0 - np.where(yb == k, 1.0, -1.0) * f[:, k])
            sums = [val[s].sum() for s in sets]
            feats = [s / n for s in sums]
            if surrogate.num_inputs == 6:
                feats += [s / max(m_.sum(), 1) for s, m_ in zip(sums, sets)]
            rows.append(feats)
    h = np.asarray(rows, np.float64)
    if surrogate.feature_mean is not None:
        h = (h - np.asarray(surrogate.feature_mean)) / np.asarray(surrogate.feature_scale)
    act = {"softplus": _np_softplus, "tanh": np.tanh}[surrogate.activation]
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), surrogate.params)
    for i in range(len(surrogate.hidden)):
        layer = params[f"hidden_{i}"]
        h = act(h @ layer["kernel"] + layer["bias"])
    out = h @ params["out"]["kernel"] + params["out"]["bias"]
    return out[:, 0].mean()


@functools.lru_cache(maxsize=None)
def _float64_cases():
    r0, r1 = margin.margin_offsets(COUNTS)
    prob6, hinge3 = _surrogates()
    return {
        "cross_entropy": np_cross_entropy(LOGITS, LABELS),
        "cross_entropy_weighted_smoothed": np_cross_entropy(LOGITS, LABELS, CLASS_W, 0.1),
        "soft_dice": np_soft_dice(LOGITS, LABELS),
        "soft_dice_per_image_all": np_soft_dice(LOGITS, LABELS, per_image=True, classes="all"),
        "binary_cross_entropy": np_binary_cross_entropy(LOGITS[..., 0], BINARY, 2.0),
        "margin_calibration": np_margin(LOGITS, LABELS, r0, r1),
        "neuroiou_prob6": np_neuroiou(LOGITS, LABELS, prob6),
        "neuroiou_hinge3_standardised": np_neuroiou(LOGITS, LABELS, hinge3),
        "weighted_sum": (np_cross_entropy(LOGITS, LABELS) + 0.5 * np_soft_dice(LOGITS, LABELS)
                         + 0.25 * np_margin(LOGITS, LABELS, r0, r1)),
    }


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_weighted_smoothed",
                                  "soft_dice", "soft_dice_per_image_all",
                                  "binary_cross_entropy", "margin_calibration",
                                  "neuroiou_prob6", "neuroiou_hinge3_standardised",
                                  "weighted_sum"])
def test_float64_matches_float64_numpy(name, x64):
    want = _float64_cases()[name]
    value, _ = _value_and_grad(name, jnp.float64)
    assert value.dtype == jnp.float64
    # float32 arithmetic anywhere (or float32-rounded constants) would miss by ~1e-7
    np.testing.assert_allclose(float(value), want, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------
# Metrics: documented dtypes and the same values with x64 on
# ----------------------------------------------------------------------------------------------

MEAN_INSTANCE_SIZE = np.array([0.0, 40.0, 25.0, 0.0])
GROUPS = (0, 0, 1, 1)


def _metric_inputs():
    rng = np.random.default_rng(1)
    preds = np.argmax(LOGITS, -1).astype(np.int32)
    preds[0, 0, 0] = 9  # an out-of-range prediction is counted nowhere
    instances = (LABELS.astype(np.int64) * 1000 + 1001 + rng.integers(0, 3, LABELS.shape))
    instances = np.where(LABELS < C, instances, 0).astype(np.int32)
    mask = np.array([True, True])
    cm19 = rng.integers(0, 50, size=(19, 19)).astype(np.int32)
    return preds, LABELS, instances, mask, cm19


def _all_metrics(preds, labels, instances, mask, cm19):
    cm = m.confusion_matrix(preds, labels, C, mask=mask)
    out = {
        "confusion": cm,
        "iou": m.iou_from_confusion(cm),
        "miou": m.mean_iou(cm),
        "pixel_accuracy": m.pixel_accuracy(cm),
        "class_accuracy": m.class_accuracy(cm),
        "mean_class_accuracy": m.mean_class_accuracy(cm),
        "fw_iou": m.frequency_weighted_iou(cm),
        "merged": m.merge_confusion(cm, GROUPS),
        "category_iou": m.cityscapes_category_iou(cm19),
        "per_image_iou": m.per_image_iou(preds, labels, C),
        "per_image_miou": m.per_image_mean_iou(preds, labels, C),
        "batch_miou_present": m.batch_mean_iou(preds, labels, C),
        "batch_miou_union": m.batch_mean_iou(preds, labels, C, classes="union"),
        "instance_iou": m.instance_iou(jnp.diagonal(cm), cm.sum(-1) - jnp.diagonal(cm), cm,
                                       MEAN_INSTANCE_SIZE > 0),  # unit weights
    }
    stats = m.batch_statistics(preds, labels, C, mask=mask, instances=instances,
                               categories=GROUPS, max_instance_id=4999)
    out.update({f"stats/{k}": v for k, v in stats.items()})
    return out


_all_metrics_jit = jax.jit(_all_metrics)
INT32_METRICS = {"confusion", "merged", "stats/confusion", "stats/image_count",
                 "stats/image_class_count",
                 "stats/instance_class", "stats/instance_size", "stats/instance_tp",
                 "stats/instance_category_tp"}


def test_metrics_under_x64_keep_dtypes_and_values(x64):
    args = [jnp.asarray(a) for a in _metric_inputs()]
    got = _all_metrics_jit(*args)
    with global_x64(False):
        want = _all_metrics_jit(*[jnp.asarray(a) for a in _metric_inputs()])
    assert sorted(got) == sorted(want)
    for key, value in got.items():
        expected = jnp.int32 if key in INT32_METRICS else jnp.float32
        assert value.dtype == expected, (key, value.dtype)
        assert want[key].dtype == expected, (key, want[key].dtype)
        np.testing.assert_allclose(np.asarray(value), np.asarray(want[key]), rtol=1e-6, atol=0,
                                   equal_nan=True, err_msg=key)
    # not vacuous: the inputs exercise every statistic
    assert np.asarray(got["stats/image_count"]) == 2
    assert np.sum(np.asarray(got["stats/instance_tp"])) > 0


def test_metric_counts_create_no_64bit_value_under_x64(x64):
    """Counts, sorts and sums of the per-batch statistics stay 32-bit. (The functions of a
    confusion matrix are checked by dtype and value only: ``jnp.diagonal``'s gather indices are
    JAX's own int64 under x64, not a count.)"""
    preds, labels, instances, mask, _ = [jnp.asarray(a) for a in _metric_inputs()]
    found = _strong_64bit(
        lambda p, y, i, k: m.batch_statistics(p, y, C, mask=k, instances=i, categories=GROUPS),
        preds, labels, instances, mask)
    assert not found, found


def test_numpy_scores_stay_float64_and_accumulator_matches(x64):
    preds, labels, instances, _, _ = _metric_inputs()
    cm = m.confusion_matrix(jnp.asarray(preds), jnp.asarray(labels), C)
    host = np.asarray(cm, np.int64)
    for fn in (m.iou_from_confusion, m.class_accuracy):
        assert fn(host).dtype == np.float64
        assert fn(cm).dtype == jnp.float32
    for fn in (m.mean_iou, m.pixel_accuracy, m.mean_class_accuracy, m.frequency_weighted_iou):
        assert np.asarray(fn(host)).dtype == np.float64

    def result():
        acc = m.MetricAccumulator(C, mean_instance_size=MEAN_INSTANCE_SIZE, categories=GROUPS)
        acc.update(preds, labels, instances=instances)
        return acc.result()

    got = result()
    with global_x64(False):
        want = result()
    assert sorted(got) == sorted(want)
    for key in got:
        np.testing.assert_allclose(np.asarray(got[key], np.float64),
                                   np.asarray(want[key], np.float64), rtol=1e-6, atol=0,
                                   equal_nan=True, err_msg=key)
