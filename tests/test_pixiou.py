"""The PixIoU reconstruction: distance maps vs SciPy, submodularity, the abstract's properties."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxseg.losses import lovasz_softmax as _lovasz_softmax
from jaxseg.losses import pixiou
from jaxseg.losses.pixiou import distance_to_mask

# Compiled once per (options, shape): far quicker than op-by-op dispatch on a loaded CPU.
pixiou_loss = jax.jit(
    pixiou.pixiou_loss,
    static_argnames=(
        "distance_weight", "location_weight", "radius", "classes", "per_image", "ignore_index",
        "from_logits",
    ),
)
lovasz_softmax = jax.jit(
    _lovasz_softmax, static_argnames=("classes", "per_image", "ignore_index", "from_logits")
)


# ---------------------------------------------------------------- distance maps


@pytest.mark.parametrize("shape", [(9, 13), (16, 5)])
@pytest.mark.parametrize("radius", [None, 3.5, 6.0])
def test_distance_matches_scipy(shape, radius):
    rng = np.random.default_rng(hash((shape, radius)) % 2**32)
    masks = rng.random((3,) + shape) < np.array([0.03, 0.15, 0.5])[:, None, None]
    masks[0, 0, 0] = True  # no empty mask here
    got = np.asarray(jax.jit(lambda m: distance_to_mask(m, max_distance=radius))(masks))
    for m, d in zip(masks, got):
        want = ndimage.distance_transform_edt(~m)
        if radius is not None:
            want = np.minimum(want, radius)
        np.testing.assert_allclose(d, want, rtol=1e-6, atol=1e-6)


def test_distance_empty_mask_and_errors():
    empty = np.zeros((2, 4, 5), bool)
    assert np.all(np.isinf(np.asarray(distance_to_mask(empty))))
    np.testing.assert_array_equal(np.asarray(distance_to_mask(empty, max_distance=2.0)), 2.0)
    with pytest.raises(ValueError, match="H, W"):
        distance_to_mask(np.zeros(5, bool))
    with pytest.raises(ValueError, match="max_distance"):
        distance_to_mask(empty, max_distance=0.0)


# ---------------------------------------------------- the set function (reference)


def _set_function(in_m, gt, dnorm, alpha, lam, counted=None):
    """L(M) = w(M)/(w(G)+w(M\\G)) + lam * sum_{M\\G} e dnorm / |G| in float64 (M a bool vector).

    ``counted`` (e) marks the pixels whose image holds the class (all when None).
    """
    w = 1.0 + alpha * dnorm
    e = np.ones(gt.shape, bool) if counted is None else counted
    fp = in_m & ~gt
    num = w[in_m].sum()
    den = w[gt].sum() + w[fp].sum()
    jac = num / den if den > 0 else 0.0
    return jac + lam * dnorm[fp & e].sum() / max(gt.sum(), 1)


def _extension(m, gt, dnorm, alpha, lam, counted=None):
    """Lovász extension of the set function by its definition (sort, marginal gains)."""
    order = np.argsort(-m, kind="stable")
    value, prev = 0.0, 0.0
    in_m = np.zeros(m.shape, bool)
    for i in order:
        in_m[i] = True
        cur = _set_function(in_m, gt, dnorm, alpha, lam, counted)
        value += m[i] * (cur - prev)
        prev = cur
    return value


def test_set_function_is_submodular_brute_force():
    rng = np.random.default_rng(0)
    n = 8
    for trial in range(4):
        gt = rng.random(n) < 0.4
        gt[0] = True
        dnorm = np.where(gt, 0.0, rng.random(n))
        counted = rng.random(n) < 0.7
        alpha, lam = [(1.0, 1.0), (3.0, 0.5), (0.0, 2.0), (2.0, 0.0)][trial]
        subsets = np.array(list(itertools.product([False, True], repeat=n)))
        values = np.array([_set_function(s, gt, dnorm, alpha, lam, counted) for s in subsets])
        index = {tuple(s): v for s, v in zip(subsets, values)}
        # f(A) + f(B) >= f(A | B) + f(A & B) for every pair of subsets
        for a, fa in zip(subsets, values):
            union = subsets | a
            inter = subsets & a
            fu = np.array([index[tuple(u)] for u in union])
            fi = np.array([index[tuple(i)] for i in inter])
            assert np.all(fa + values >= fu + fi - 1e-12)
        assert index[(False,) * n] == 0.0


# ------------------------------------------------------------- the loss itself


def _reference_loss(probs, labels, alpha, lam, radius, ignore_index=255):
    """Batch-level, classes='present', from probabilities, via the brute-force extension."""
    b_num, h, w, c_num = probs.shape
    valid = labels != ignore_index
    values = []
    for c in range(c_num):
        fg = (labels == c) & valid
        if not fg.any():
            continue
        dn = np.zeros(labels.shape)
        counted = np.zeros(labels.shape, bool)
        for b in range(b_num):
            if fg[b].any():
                d = np.minimum(ndimage.distance_transform_edt(~fg[b]), radius) / radius
                counted[b] = True
            else:
                d = np.ones((h, w))
            dn[b] = np.where(fg[b], 0.0, d)
        m = np.abs(fg.astype(float) - probs[..., c])
        values.append(
            _extension(m[valid], fg[valid], dn[valid], alpha, lam, counted[valid])
        )
    return float(np.mean(values)) if values else 0.0


def test_loss_matches_brute_force_extension():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(2, 4, 5)).astype(np.int32)
    labels[0, 0, :2] = 255
    labels[1] = np.where(labels[1] == 2, 0, labels[1])  # class 2 absent from image 1
    probs = rng.dirichlet(np.ones(3), size=(2, 4, 5)).astype(np.float32)
    for alpha, lam, radius in [(1.0, 1.0, 3.0), (2.5, 0.0, 2.0), (0.0, 1.5, 10.0)]:
        got = pixiou_loss(
            probs, labels, from_logits=False, location_weight=alpha, distance_weight=lam,
            radius=radius,
        )
        want = _reference_loss(probs.astype(np.float64), labels, alpha, lam, radius)
        np.testing.assert_allclose(float(got), want, rtol=2e-5)


def test_hard_prediction_equals_set_function():
    """On a 0/1 error vector the loss is the set function of the mispredicted pixels."""
    labels = np.zeros((1, 6, 8), np.int32)
    labels[0, 1:4, 1:3] = 1
    pred = np.zeros((1, 6, 8), np.int32)
    pred[0, 2:5, 2:5] = 1
    probs = np.eye(2, dtype=np.float32)[pred]
    got = pixiou_loss(probs, labels, from_logits=False, classes=(1,), radius=4.0)
    gt = labels[0] == 1
    dn = np.where(gt, 0.0, np.minimum(ndimage.distance_transform_edt(~gt), 4.0) / 4.0)
    want = _set_function((pred[0] != labels[0]).ravel(), gt.ravel(), dn.ravel(), 1.0, 1.0)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    # a perfect prediction costs 0, as for the IoU
    perfect = np.eye(2, dtype=np.float32)[labels]
    assert float(pixiou_loss(perfect, labels, from_logits=False, classes=(1,), radius=4.0)) == 0.0


def _two_squares(gap):
    """Ground-truth square of class 1 at the left; predicted square of class 1 `gap` pixels away."""
    labels = np.zeros((1, 10, 30), np.int32)
    labels[0, 3:7, 2:6] = 1
    pred = np.zeros((1, 10, 30), np.int32)
    pred[0, 3:7, 6 + gap : 10 + gap] = 1
    return np.eye(2, dtype=np.float32)[pred], labels


def test_moving_disjoint_prediction_away_raises_loss():
    pix, lov = [], []
    for gap in (1, 3, 6, 12):
        probs, labels = _two_squares(gap)
        pix.append(float(pixiou_loss(probs, labels, from_logits=False, radius=None)))
        lov.append(float(lovasz_softmax(probs, labels, from_logits=False)))
        # also with soft probabilities from logits
    assert all(a < b for a, b in zip(pix, pix[1:])), pix
    np.testing.assert_allclose(lov, lov[0], rtol=1e-6)
    # the class-1 Jaccard loss is at its plateau (1) for every gap
    probs, labels = _two_squares(12)
    np.testing.assert_allclose(float(lovasz_softmax(probs, labels, from_logits=False,
                                                    classes=(1,))), 1.0, rtol=1e-6)
    # soft predictions: the same, strictly
    soft = []
    for gap in (1, 6, 12):
        probs, labels = _two_squares(gap)
        logits = 4.0 * (2 * probs - 1)
        soft.append(float(pixiou_loss(logits, labels, radius=16.0)))
    assert soft[0] < soft[1] < soft[2], soft


def test_location_sensitivity():
    """Same number of false positives: far ones cost more (Jaccard term only, λ = 0)."""
    labels = np.zeros((1, 10, 30), np.int32)
    labels[0, 3:7, 2:6] = 1
    near = labels.copy()
    near[0, 3:7, 6] = 1  # 4 false positives touching the object
    far = labels.copy()
    far[0, 3:7, 25] = 1  # 4 false positives far away
    kw = dict(from_logits=False, distance_weight=0.0, location_weight=2.0, radius=None)
    loss_near = float(pixiou_loss(np.eye(2, dtype=np.float32)[near], labels, **kw))
    loss_far = float(pixiou_loss(np.eye(2, dtype=np.float32)[far], labels, **kw))
    assert loss_near < loss_far
    plain = [float(lovasz_softmax(np.eye(2, dtype=np.float32)[p], labels, from_logits=False))
             for p in (near, far)]
    np.testing.assert_allclose(plain[0], plain[1], rtol=1e-6)


@pytest.fixture(scope="module")
def random_batch():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=(2, 7, 9)).astype(np.int32)
    labels[0, :2] = 255
    labels[1] = np.where(labels[1] == 3, 1, labels[1])
    logits = rng.normal(size=(2, 7, 9, 4)).astype(np.float32) * 2
    return logits, labels


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", (0, 3)])
def test_reduces_to_lovasz_softmax(random_batch, per_image, classes):
    logits, labels = random_batch
    kw = dict(classes=classes, per_image=per_image)
    got = pixiou_loss(logits, labels, distance_weight=0.0, location_weight=0.0, **kw)
    want = lovasz_softmax(logits, labels, **kw)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_gradients_jit_and_void(random_batch):
    logits, labels = random_batch
    fn = jax.jit(jax.value_and_grad(lambda x: pixiou.pixiou_loss(x, labels, per_image=True)))
    val, g = fn(jnp.asarray(logits))
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(np.asarray(g)[labels == 255], 0.0)
    # directional finite difference (the order of the errors is locally constant)
    direction = np.random.default_rng(3).normal(size=logits.shape).astype(np.float32)
    eps = 1e-3
    f = lambda x: float(pixiou_loss(x, labels, per_image=True))  # noqa: E731  (jitted)
    fd = (f(logits + eps * direction) - f(logits - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(np.sum(np.asarray(g) * direction)), fd, rtol=2e-2, atol=1e-4)
    void = np.full_like(labels, 255)
    val, g = jax.jit(jax.value_and_grad(lambda x: pixiou.pixiou_loss(x, void)))(
        jnp.asarray(logits)
    )
    assert float(val) == 0.0 and np.all(np.asarray(g) == 0)


def test_bad_inputs_and_registry(random_batch):
    from jaxseg.losses.registry import build_loss

    logits, labels = random_batch
    with pytest.raises(ValueError, match=r"rank 4 \[B, H, W, C\]"):
        pixiou.pixiou_loss(logits[0], labels[0])
    with pytest.raises(ValueError, match=">= 0"):
        pixiou.pixiou_loss(logits, labels, distance_weight=-1.0)
    with pytest.raises(ValueError, match="radius"):
        pixiou.pixiou_loss(logits, labels, radius=0.0)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        pixiou.pixiou_loss(logits, labels.astype(np.float32))
    fn = build_loss({"name": "pixiou", "kwargs": {"radius": 5.0, "distance_weight": 0.5}})
    np.testing.assert_allclose(
        float(jax.jit(fn)(logits, labels)),
        float(pixiou_loss(logits, labels, radius=5.0, distance_weight=0.5)),
        rtol=1e-6,
    )
