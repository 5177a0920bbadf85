"""Distribution-aware margin calibration: offsets and loss against float64 NumPy references."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.losses import margin


def _np_offsets(counts, tau, upsilon):
    """Independent float64 reference of the offsets of Yu et al., IJCV 2022, as the authors' code
    computes them, with 0 for a class with n1 = 0 or n0 = 0 (a jaxseg convention); class-by-class,
    plain Python."""
    n = float(sum(counts))
    r0, r1 = [], []
    for n1 in counts:
        n1 = float(n1)
        n0 = n - n1
        if n1 == 0 or n0 == 0:
            r0.append(0.0)
            r1.append(0.0)
            continue
        p = n1 / n
        a = tau * n0**0.5 / n1
        r0.append(a)
        r1.append(a * p * n1**0.5 / (upsilon * n0 - p * n0**0.5))
    return np.array(r0), np.array(r1)


def _np_loss(logits, labels, r0, r1, ignore_index=255):
    """float64 reference, one pixel at a time."""
    logits = np.asarray(logits, np.float64)
    c_num = logits.shape[-1]
    flat = logits.reshape(-1, c_num)
    lab = np.asarray(labels).reshape(-1)
    softplus = lambda x: np.log1p(np.exp(-abs(x))) + max(x, 0.0)  # noqa: E731
    vals = []
    for f, y in zip(flat, lab):
        if y == ignore_index:
            continue
        total = 0.0
        for c in range(c_num):
            gamma = f[c] - max(f[j] for j in range(c_num) if j != c)
            if c == y:
                total += c_num * softplus(-(gamma - r1[c]))
            else:
                total += softplus(gamma + r0[c])
        vals.append(total / c_num)
    return float(np.mean(vals)) if vals else 0.0


def test_offsets_match_reference():
    counts = [1_000_000, 2_000, 50_000, 7]
    for tau, ups in [(10.0, 1.0), (3.0, 2.5)]:
        r0, r1 = margin.margin_offsets(counts, tau=tau, upsilon=ups)
        e0, e1 = _np_offsets(counts, tau, ups)
        np.testing.assert_allclose(r0, e0, rtol=1e-12)
        np.testing.assert_allclose(r1, e1, rtol=1e-12)
        assert r0.dtype == np.float64
    # rarer class -> larger rho_0i
    assert r0[3] > r0[1] > r0[2] > r0[0] > 0


def test_offsets_absent_class_warns_and_is_zero():
    with pytest.warns(UserWarning, match="class 1 has no labelled pixel"):
        r0, r1 = margin.margin_offsets([10, 0, 5])
    assert r0[1] == 0 and r1[1] == 0
    assert np.all(np.isfinite(r0)) and np.all(np.isfinite(r1))
    with pytest.warns(UserWarning) as record:
        r0, r1 = margin.margin_offsets([0, 12])
    messages = " ".join(str(w.message) for w in record)
    assert "class 0 has no labelled pixel" in messages and "owns every labelled pixel" in messages
    assert np.all(r0 == 0) and np.all(r1 == 0)


def test_offsets_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        margin.margin_offsets([[1, 2]])
    with pytest.raises(ValueError, match=">= 0"):
        margin.margin_offsets([1, -2])
    with pytest.raises(ValueError, match="sum to 0"):
        margin.margin_offsets([0, 0])
    with pytest.raises(ValueError, match="upsilon"):
        margin.margin_offsets([1, 2], upsilon=0.0)
    with pytest.raises(ValueError, match="denominator"):
        margin.margin_offsets([1, 1], upsilon=0.1)


def test_count_class_pixels():
    labels = [np.array([[0, 1], [255, 2]], np.uint8), {"label": np.array([2, 2, 255])}]
    np.testing.assert_array_equal(margin.count_class_pixels(labels, 3), [1, 1, 3])
    with pytest.raises(ValueError, match="label values"):
        margin.count_class_pixels([np.array([3])], 3)


def test_top2_margins():
    f = jnp.array([[1.0, 3.0, 2.0], [0.5, 0.5, -1.0]])
    np.testing.assert_allclose(
        margin.top2_margins(f), [[-2.0, 1.0, -1.0], [0.0, 0.0, -1.5]], rtol=0, atol=1e-6
    )


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32) * 2
    labels = rng.integers(0, 4, size=(2, 5, 6)).astype(np.int32)
    labels[0, :2] = 255
    return logits, labels


def test_loss_matches_reference(batch):
    logits, labels = batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r0, r1 = margin.margin_offsets([5000, 300, 40, 1200], tau=10.0)
    # make rho_i0 non-negligible so the ground-truth term's offset is checked as well
    r1 = r1 + np.array([0.3, 0.0, 1.1, 0.2])
    got = jax.jit(
        lambda f, y: margin.margin_calibration_loss(f, y, rho_0i=r0, rho_i0=r1)
    )(logits, labels)
    want = _np_loss(logits, labels, r0, r1)
    np.testing.assert_allclose(float(got), want, rtol=2e-6)
    assert got.dtype == jnp.float32
    # bfloat16 inputs are accumulated in float32
    got16 = margin.margin_calibration_loss(
        jnp.asarray(logits, jnp.bfloat16), labels, rho_0i=r0, rho_i0=r1
    )
    assert got16.dtype == jnp.float32
    np.testing.assert_allclose(float(got16), want, rtol=3e-2)


def test_targets_fixed_by_class_identity(batch):
    """With ρ = 0, the ground-truth term is C*softplus(-γ_y) even when γ_y < 0 (no sign flip)."""
    logits, labels = batch
    zeros = np.zeros(4)
    got = margin.margin_calibration_loss(logits, labels, rho_0i=zeros, rho_i0=zeros)
    np.testing.assert_allclose(float(got), _np_loss(logits, labels, zeros, zeros), rtol=2e-6)


def test_gradient_and_ignore(batch):
    logits, labels = batch
    r0, r1 = margin.margin_offsets([5000, 300, 40, 1200])
    loss = lambda f: margin.margin_calibration_loss(f, labels, rho_0i=r0, rho_i0=r1)  # noqa: E731
    g = jax.grad(loss)(jnp.asarray(logits))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(np.asarray(g)[labels == 255], 0.0)
    # finite differences in float64 on one coordinate of a valid pixel
    eps = 1e-3
    idx = (1, 2, 3, 1)
    fp, fm = logits.copy(), logits.copy()
    fp[idx] += eps
    fm[idx] -= eps
    fd = (_np_loss(fp, labels, r0, r1) - _np_loss(fm, labels, r0, r1)) / (2 * eps)
    np.testing.assert_allclose(float(g[idx]), fd, rtol=1e-3, atol=1e-6)
    # changing ignored logits does not change the loss
    shifted = logits.copy()
    shifted[labels == 255] += 7.0
    np.testing.assert_allclose(float(loss(shifted)), float(loss(logits)), rtol=1e-6)


def test_all_ignored_gives_zero_with_zero_grad(batch):
    logits, labels = batch
    labels = np.full_like(labels, 255)
    r0, r1 = np.ones(4), np.ones(4)
    val, g = jax.value_and_grad(
        lambda f: margin.margin_calibration_loss(f, labels, rho_0i=r0, rho_i0=r1)
    )(jnp.asarray(logits))
    assert float(val) == 0.0 and np.all(np.asarray(g) == 0)


def test_shape_errors(batch):
    logits, labels = batch
    with pytest.raises(ValueError, match="labels shape .* does not match"):
        margin.margin_calibration_loss(logits, labels[:, :3], rho_0i=np.ones(4), rho_i0=np.ones(4))
    with pytest.raises(ValueError, match=r"\[C\]"):
        margin.margin_calibration_loss(logits, labels, rho_0i=np.ones(3), rho_i0=np.ones(4))


def test_registry_builder(batch):
    from jaxseg.losses.registry import build_loss

    logits, labels = batch
    counts = [5000, 300, 40, 1200]
    fn = build_loss({"name": "margin_calibration", "kwargs": {"class_pixel_counts": counts}})
    r0, r1 = margin.margin_offsets(counts)
    np.testing.assert_allclose(
        float(fn(logits, labels)), _np_loss(logits, labels, r0, r1), rtol=2e-6
    )
    with pytest.raises(ValueError, match="exactly one"):
        margin.build_margin_calibration()
    with pytest.raises(ValueError, match="exactly one"):
        margin.build_margin_calibration(class_pixel_counts=counts, rho_0i=r0, rho_i0=r1)
    with pytest.raises(ValueError, match="both rho_0i and rho_i0"):
        margin.build_margin_calibration(rho_0i=r0)


def test_shapes_margin_config_builds_from_split_statistics(batch):
    """configs/shapes_margin.py: the trainer's loss setup reads the per-class pixel counts of the
    split its ``statistics`` names (synthetic data) and builds the loss from them."""
    import importlib.util
    import os

    from jaxseg import sharding
    from jaxseg.data import split_statistics
    from jaxseg.training import initialization, loss_setup

    path = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "shapes_margin.py")
    spec = importlib.util.spec_from_file_location("shapes_margin_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    st = config.loss.kwargs.statistics
    counts = np.asarray(
        split_statistics(st.name, st.split, **dict(st.options)).class_pixel_counts
    )
    assert counts.sum() > 0
    num_classes = counts.size
    fn = loss_setup.create_loss(config, sharding.create_mesh(), num_classes)
    _, labels = batch
    logits = np.random.default_rng(5).normal(size=labels.shape + (num_classes,))
    labels = np.where(labels == 255, 255, labels % num_classes).astype(np.int32)
    r0, r1 = margin.margin_offsets(counts)
    np.testing.assert_allclose(
        float(fn(logits.astype(np.float32), labels)), _np_loss(logits, labels, r0, r1), rtol=2e-6
    )
    with pytest.raises(initialization.ConfigError, match="statistics must be"):
        loss_setup.class_pixel_counts_from_data({"name": "shapes"})
    with pytest.raises(TypeError):  # the loss itself reads no data
        margin.build_margin_calibration(statistics=st.to_dict())
