"""Tests of the Lovász extension and the Lovász losses against independent references."""

import fractions
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.sharding import NamedSharding, PartitionSpec as P

import lovasz_reference as ref
from jaxseg.losses import (build_loss, lovasz_extension, lovasz_hinge, lovasz_sigmoid,
                           lovasz_softmax)
from jaxseg.losses import extension

extension_jit = jax.jit(lovasz_extension)


# ----------------------------------------------------------------------------- the extension


@pytest.mark.parametrize("p", [1, 2, 3, 7, 50, 1000])
def test_extension_matches_algorithm_1(p):
  rng = np.random.default_rng(p)
  errors = rng.random((4, p)).astype(np.float32)
  gt = rng.random((4, p)) < 0.3
  got = np.asarray(extension_jit(errors, gt))
  want = [ref.extension(e, g) for e, g in zip(errors, gt)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_extension_equals_jaccard_loss_on_every_vertex():
  """On {0,1}^p the extension is Δ(M) = |M| / |G ∪ M| (all 2^p vertices, several G)."""
  p = 7
  vertices = np.array(list(itertools.product([0.0, 1.0], repeat=p)), np.float32)
  for gt in ([1, 1, 0, 0, 1, 0, 0], [0] * p, [1] * p, [0, 0, 0, 0, 0, 0, 1]):
    gt = np.array(gt, bool)
    got = np.asarray(extension_jit(vertices, np.broadcast_to(gt, vertices.shape)))
    mis = vertices > 0
    union = (mis | gt).sum(1)
    want = np.where(union > 0, mis.sum(1) / np.maximum(union, 1), 0.0)
    np.testing.assert_allclose(got, want, atol=1e-7)


def test_weighted_extension_equals_weighted_jaccard_on_every_vertex():
  p = 6
  rng = np.random.default_rng(1)
  weights = rng.random(p).astype(np.float32) * 3
  weights[2] = 0.0
  gt = np.array([1, 0, 1, 0, 0, 1], bool)
  vertices = np.array(list(itertools.product([0.0, 1.0], repeat=p)), np.float32)
  got = np.asarray(jax.jit(lambda e: lovasz_extension(
      e, np.broadcast_to(gt, e.shape), weights=np.broadcast_to(weights, e.shape)))(vertices))
  want = [ref.weighted_jaccard_set_loss(v > 0, gt, weights) for v in vertices]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_extension_is_the_max_over_permutation_vertices():
  """For a submodular Δ the extension is max over orderings π of <m, g_π> (tight closure)."""
  p = 5
  rng = np.random.default_rng(2)
  gt = np.array([1, 0, 1, 0, 0], bool)
  gs = []
  for perm in itertools.permutations(range(p)):
    g = np.zeros(p)
    g[list(perm)] = ref.lovasz_grad(gt[list(perm)])
    gs.append(g)
  gs = np.array(gs)
  for _ in range(20):
    m = rng.random(p).astype(np.float32)
    np.testing.assert_allclose(float(extension_jit(m, gt)), (gs @ m).max(), rtol=1e-6)


def test_extension_is_convex():
  rng = np.random.default_rng(3)
  gt = rng.random((200, 30)) < 0.4
  a = rng.random((200, 30)).astype(np.float32)
  b = rng.random((200, 30)).astype(np.float32)
  t = rng.random((200, 1)).astype(np.float32)
  mid = extension_jit(t * a + (1 - t) * b, gt)
  chord = t[:, 0] * extension_jit(a, gt) + (1 - t[:, 0]) * extension_jit(b, gt)
  assert np.all(np.asarray(mid) <= np.asarray(chord) + 1e-6)


def test_extension_invariant_to_ties_and_pixel_order():
  rng = np.random.default_rng(4)
  errors = rng.choice(np.array([0.0, 0.25, 0.5, 1.0], np.float32), size=(64, 40))
  gt = rng.random((64, 40)) < 0.5
  got = np.asarray(extension_jit(errors, gt))
  np.testing.assert_allclose(got, [ref.extension(e, g) for e, g in zip(errors, gt)], atol=1e-6)
  perm = rng.permutation(40)
  np.testing.assert_allclose(extension_jit(errors[:, perm], gt[:, perm]), got, atol=1e-6)


def test_extension_gradient_is_the_increments_in_pixel_order():
  rng = np.random.default_rng(5)
  errors = rng.random(30).astype(np.float32)
  gt = rng.random(30) < 0.4
  grad = np.asarray(jax.grad(lambda e: lovasz_extension(e, gt))(errors))
  order = np.argsort(-errors)
  want = np.zeros(30)
  want[order] = ref.lovasz_grad(gt[order])
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def test_extension_void_pixels_take_no_part():
  rng = np.random.default_rng(6)
  errors = rng.random(40).astype(np.float32)
  gt = rng.random(40) < 0.4
  valid = rng.random(40) < 0.6
  got, grad = jax.value_and_grad(lambda e: lovasz_extension(e, gt, valid=valid))(errors)
  np.testing.assert_allclose(got, ref.extension(errors[valid], gt[valid]), rtol=1e-6)
  assert np.all(np.asarray(grad)[~valid] == 0)


def test_rows_modes_skip_and_max_error_without_sort():
  errors = jnp.asarray([[0.2, 0.9, 0.4], [0.3, 0.1, 0.7], [0.5, 0.5, 0.5]], jnp.float32)
  gt = jnp.asarray([[True, False, False], [False, False, False], [True, True, False]])
  valid = jnp.ones_like(gt)
  mode = jnp.asarray([extension.SKIP, extension.MAX_ERROR, extension.SORT])
  values = extension.lovasz_extension_rows(errors, gt, valid, mode)
  np.testing.assert_allclose(values, [0.0, 0.7, ref.extension(errors[2], gt[2])], rtol=1e-6)
  grads = jax.grad(lambda e: extension.lovasz_extension_rows(e, gt, valid, mode).sum())(errors)
  np.testing.assert_allclose(grads[0], 0.0)
  np.testing.assert_allclose(grads[1], [0.0, 0.0, 1.0])


def test_increments_exact_on_a_long_sort():
  """At 8 VOC crops (824k pixels) float32 increments match exact rationals (median < 1e-5).

  Algorithm 1 as printed (Berman et al., CVPR 2018, Sec. 3), in float32, is off by percents here:
  its line 7 subtracts nearly equal numbers.
  """
  n = 8 * 321 * 321
  rng = np.random.default_rng(7)
  delta = rng.random(n) < 0.3
  g = np.asarray(jax.jit(extension.jaccard_increments)(jnp.asarray(delta), jnp.ones(n, bool)))
  total = int(delta.sum())
  cum_pos = np.cumsum(delta)
  cum_neg = np.cumsum(~delta)
  positions = rng.choice(np.arange(1, n), size=400, replace=False)
  rel = []
  for k in positions:  # exact J_k - J_{k-1} with fractions, from the definition
    def jac(i):
      inter = total - (cum_pos[i] if i >= 0 else 0)
      union = total + (cum_neg[i] if i >= 0 else 0)
      return 1 - fractions.Fraction(int(inter), int(union))
    exact = jac(k) - jac(k - 1)
    if exact != 0:
      rel.append(abs(float(g[k]) - float(exact)) / float(exact))
  assert np.median(rel) < 1e-5 and np.max(rel) < 1e-4
  # The published float32 algorithm at the same size, for contrast.
  d32 = delta.astype(np.float32)
  inter32 = np.float32(total) - np.cumsum(d32, dtype=np.float32)
  union32 = np.float32(total) + np.cumsum(1 - d32, dtype=np.float32)
  jac32 = 1 - inter32 / union32
  alg1 = np.concatenate([jac32[:1], jac32[1:] - jac32[:-1]])
  rel_alg1 = [abs(alg1[k] - g[k]) / g[k] for k in positions if g[k] > 0]
  assert np.median(rel_alg1) > 1e-3


@pytest.mark.parametrize("num_relevant", [1, 4999, 5000, 5001, 40000])
def test_bucketed_sort_at_every_bucket_boundary(num_relevant):
  """Rows of 40000 pixels sort the relevant keys in a bucket of 5000 or 40000; the value and the
  gradient must not depend on which one (boundary on both sides; every formulation and three
  buckets: tests/test_lovasz_formulations.py)."""
  assert extension._bucket_sizes(40000) == [5000, 40000]
  p = 40000
  rng = np.random.default_rng(num_relevant)
  num_positive = min(num_relevant, 50)
  errors = rng.uniform(0.0, 0.3, p).astype(np.float32)  # irrelevant negatives: below 0.3
  gt = np.zeros(p, bool)
  gt[:num_positive] = True
  errors[:num_positive] = rng.uniform(0.3, 1.0, num_positive)
  # Relevant negatives: above the smallest ground-truth error (no ties, so one gradient).
  errors[num_positive:num_relevant] = rng.uniform(errors[:num_positive].min() + 1e-6, 1.0,
                                                  num_relevant - num_positive)
  perm = rng.permutation(p)
  errors, gt = errors[perm], gt[perm]
  value, grad = jax.value_and_grad(lambda e: lovasz_extension(e, gt))(errors)
  np.testing.assert_allclose(value, ref.extension(errors, gt), rtol=1e-5)
  order = np.argsort(-errors, kind="stable")
  want = np.zeros(p)
  want[order] = ref.lovasz_grad(gt[order])
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("num_relevant", [4999, 5001])
def test_weighted_extension_on_a_long_row_matches_float64(num_relevant):
  p = 40000  # buckets of 5000 and 40000
  rng = np.random.default_rng(num_relevant)
  errors = rng.uniform(0.0, 0.3, p).astype(np.float32)
  gt = np.zeros(p, bool)
  gt[:40] = True
  errors[:40] = rng.uniform(0.3, 1.0, 40)
  errors[40:num_relevant] = rng.uniform(errors[:40].min() + 1e-6, 1.0, num_relevant - 40)
  weights = rng.uniform(0.1, 5.0, p).astype(np.float32)
  value, grad = jax.value_and_grad(lambda e: lovasz_extension(e, gt, weights=weights))(errors)
  order = np.argsort(-errors.astype(np.float64), kind="stable")
  w, d = weights[order].astype(np.float64), gt[order]
  inter = w[d].sum() - np.cumsum(w * d)
  union = w[d].sum() + np.cumsum(w * ~d)
  jac = 1 - inter / union
  g = np.concatenate([jac[:1], np.diff(jac)])
  np.testing.assert_allclose(value, np.dot(errors[order], g), rtol=1e-5)
  want = np.zeros(p)
  want[order] = g
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-9)


def test_extension_checks_shapes_and_dtypes():
  with pytest.raises(ValueError, match="ground_truth shape"):
    lovasz_extension(jnp.ones((3, 4)), jnp.ones((3, 5), bool))
  with pytest.raises(TypeError, match="floating point"):
    lovasz_extension(jnp.ones((4,), jnp.int32), jnp.ones((4,), bool))


# ----------------------------------------------------------------------------- Lovász-Softmax


_voc_like = ref.voc_like_labels


@pytest.fixture(scope="module")
def small_batch():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 6, 7, 5)).astype(np.float32) * 2
  labels = _voc_like(rng, 3, 6, 7, 5)
  return logits, labels


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", (0, 3, 4)])
def test_lovasz_softmax_matches_reference(small_batch, per_image, classes):
  logits, labels = small_batch
  fn = jax.jit(lambda x, y: lovasz_softmax(x, y, classes=classes, per_image=per_image))
  got = float(fn(logits, labels))
  want = ref.lovasz_softmax(logits, labels, classes=classes, per_image=per_image)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lovasz_softmax_class_weights_and_probabilities(small_batch):
  logits, labels = small_batch
  w = np.array([0.5, 1.0, 2.0, 0.0, 3.0], np.float32)
  got = lovasz_softmax(logits, labels, class_weights=w)
  np.testing.assert_allclose(got, ref.lovasz_softmax(logits, labels, class_weights=w), rtol=1e-5)
  probs = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(lovasz_softmax(probs, labels, from_logits=False),
                             ref.lovasz_softmax(logits, labels), rtol=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_softmax_gradient_matches_finite_differences(small_batch, per_image):
  logits, labels = small_batch
  logits, labels = logits[:2, :4, :5], labels[:2, :4, :5]
  grad = jax.grad(lambda x: lovasz_softmax(x, labels, classes="all", per_image=per_image))(
      jnp.asarray(logits))
  numeric = ref.numerical_gradient(
      lambda x: ref.lovasz_softmax(x, labels, classes="all", per_image=per_image), logits)
  np.testing.assert_allclose(grad, numeric, atol=2e-5)


def test_lovasz_softmax_edge_cases(small_batch):
  logits, labels = small_batch
  value_and_grad = jax.jit(jax.value_and_grad(lovasz_softmax))
  # All void: 0 with a zero gradient.
  v, g = value_and_grad(logits, np.full_like(labels, 255))
  assert float(v) == 0.0 and np.all(np.asarray(g) == 0)
  # One valid pixel.
  one = np.full_like(labels, 255)
  one[1, 2, 3] = 2
  v, g = value_and_grad(logits, one)
  assert np.isfinite(v) and np.all(np.isfinite(g))
  np.testing.assert_allclose(v, ref.lovasz_softmax(logits, one), rtol=1e-5)
  # An explicit class absent from the ground truth costs its largest error.
  probs = np.asarray(jax.nn.softmax(logits))
  absent = np.where(labels == 4, 0, labels)
  valid = absent != 255
  got = lovasz_softmax(logits, absent, classes=(4,))
  np.testing.assert_allclose(got, probs[..., 4][valid].max(), rtol=1e-6)
  # No selected class present under "present" -> 0 (only void and class 0 absent from a list).
  assert float(lovasz_softmax(logits, np.full_like(labels, 255), classes="present")) == 0.0


def test_labels_outside_the_classes_are_void_and_ignore_index_is_honoured(small_batch):
  logits, labels = small_batch
  out_of_range = labels.copy()
  out_of_range[labels == 255] = 17
  np.testing.assert_allclose(lovasz_softmax(logits, out_of_range), lovasz_softmax(logits, labels))
  relabelled = np.where(labels == 255, 3, labels)  # now class 0 is the void label
  np.testing.assert_allclose(
      lovasz_softmax(logits, relabelled, ignore_index=0, classes="all"),
      ref.lovasz_softmax(logits, relabelled, classes="all", ignore_index=0), rtol=1e-5)


def test_non_finite_logits_give_a_non_finite_loss(small_batch):
  """A diverged network must show in its loss, although the sort keys are integers."""
  logits, labels = small_batch
  bad = logits.copy()
  bad[0, 3, 3, 1] = np.nan
  assert np.isnan(float(lovasz_softmax(bad, labels)))
  assert np.isnan(float(lovasz_softmax(bad, labels, per_image=True)))
  assert np.isnan(float(lovasz_hinge(bad[..., 1], (labels == 1).astype(np.int32))))
  # A NaN on a void pixel takes no part, like everything else there.
  void = labels.copy()
  void[0, 3, 3] = 255
  assert np.isfinite(float(lovasz_softmax(bad, void)))


def test_lovasz_softmax_bfloat16_and_huge_logits(small_batch):
  logits, labels = small_batch
  f32 = lovasz_softmax(logits, labels)
  bf16 = lovasz_softmax(jnp.asarray(logits, jnp.bfloat16), labels)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=2e-2)
  huge = logits * 1e4
  v, g = jax.value_and_grad(lovasz_softmax)(huge, labels)
  assert np.isfinite(v) and np.all(np.isfinite(g))
  np.testing.assert_allclose(v, ref.lovasz_softmax(huge, labels), rtol=1e-5)


def test_lovasz_softmax_under_vmap_and_shard_map(small_batch):
  logits, labels = small_batch
  per_example = jax.vmap(lambda x, y: lovasz_softmax(x[None], y[None]))(logits, labels)
  np.testing.assert_allclose(per_example.mean(), lovasz_softmax(logits, labels, per_image=True),
                             rtol=1e-6)
  mesh = jax.make_mesh((1,), ("data",))
  sharded = jax.shard_map(lambda x, y: lovasz_softmax(x, y)[None], mesh=mesh,
                          in_specs=(P("data"), P("data")), out_specs=P("data"))
  x = jax.device_put(logits, NamedSharding(mesh, P("data")))
  y = jax.device_put(labels, NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(jax.jit(sharded)(x, y)[0], lovasz_softmax(logits, labels),
                             rtol=1e-6)
  grad = jax.jit(jax.grad(lambda a, b: sharded(a, b).sum()))(x, y)
  np.testing.assert_allclose(grad, jax.grad(lovasz_softmax)(logits, labels), atol=1e-7)


def test_lovasz_softmax_input_errors():
  with pytest.raises(ValueError, match="does not match"):
    lovasz_softmax(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 5), jnp.int32))
  with pytest.raises(TypeError, match="labels must be an integer array"):
    lovasz_softmax(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4), jnp.float32))
  with pytest.raises(ValueError, match="outside"):
    lovasz_softmax(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4), jnp.int32), classes=(5,))
  with pytest.raises(ValueError, match="classes must be"):
    lovasz_softmax(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4), jnp.int32), classes="most")


def test_gradients_at_voc_batch_size_match_float64():
  """Lovász-Softmax gradients at 8 x 321 x 321 x 21 in float32 vs a float64 closed form."""
  rng = np.random.default_rng(8)
  labels = _voc_like(rng, 8, 321, 321, 21)
  logits = rng.normal(size=(8, 321, 321, 21)).astype(np.float32)
  grad = np.asarray(jax.jit(jax.grad(lovasz_softmax))(logits, labels))
  # float64: increments per present class from exact counts, chain rule through the softmax.
  probs = ref.softmax(logits).reshape(-1, 21)
  lab = labels.reshape(-1)
  keep = lab != 255
  present = np.unique(lab[keep])
  dm = np.zeros_like(probs)
  for c in present:
    fg = (lab == c)
    err = np.abs(fg - probs[:, c])
    order = np.argsort(-np.where(keep, err, -1.0), kind="stable")
    d = fg[order] & keep[order]
    v = keep[order]
    total = d.sum()
    inter = total - np.cumsum(d)
    union = total + np.cumsum(~d & v)
    union_before = union - (~d & v)
    g = np.where(d, 1.0 / np.maximum(union, 1),
                 np.where(union_before > 0, inter / np.maximum(union * union_before, 1), 1.0))
    g = np.where(v, g, 0.0)
    gc = np.zeros(len(lab))
    gc[order] = g
    dm[:, c] = gc * np.sign(probs[:, c] - fg) / len(present)
  want = (probs * (dm - (dm * probs).sum(-1, keepdims=True))).reshape(grad.shape)
  big = np.abs(want) > 1e-12
  rel = np.abs(grad[big] - want[big]) / np.abs(want[big])
  assert np.median(rel) < 1e-5, np.median(rel)


@settings(max_examples=30, deadline=None)
@given(scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
       void=st.sampled_from([0.0, 0.5, 0.97, 1.0]),
       dtype=st.sampled_from(["float32", "bfloat16"]),
       per_image=st.booleans(),
       seed=st.integers(0, 2**16))
def test_lovasz_softmax_fuzz_finite(scale, void, dtype, per_image, seed):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(2, 3, 4, 3)) * scale, dtype)
  labels = rng.integers(0, 3, (2, 3, 4)).astype(np.int32)
  labels[rng.random(labels.shape) < void] = 255
  v, g = _fuzz_value_and_grad[per_image](logits, labels)
  assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g, np.float32)))
  assert 0.0 <= float(v) <= 1.0 + 1e-6


@settings(max_examples=20, deadline=None)
@given(scale=st.sampled_from([1e-3, 1.0, 1e4]),
       void=st.sampled_from([0.0, 0.9, 1.0]),
       dtype=st.sampled_from(["float32", "bfloat16"]),
       seed=st.integers(0, 2**16))
def test_lovasz_hinge_and_sigmoid_fuzz_finite(scale, void, dtype, seed):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(2, 3, 4)) * scale, dtype)
  labels = rng.integers(0, 2, (2, 3, 4)).astype(np.int32)
  labels[rng.random(labels.shape) < void] = 255
  for fn in _fuzz_binary:
    v, g = fn(logits, labels)
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g, np.float32)))


_fuzz_binary = [
    jax.jit(jax.value_and_grad(lovasz_hinge)),
    jax.jit(jax.value_and_grad(lambda x, y: lovasz_sigmoid(x, y, from_logits=True))),
]

_fuzz_value_and_grad = {
    pi: jax.jit(jax.value_and_grad(lambda x, y, pi=pi: lovasz_softmax(x, y, per_image=pi)))
    for pi in (False, True)
}


# ----------------------------------------------------------------------------- binary losses


@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_hinge_matches_reference(per_image):
  rng = np.random.default_rng(9)
  logits = rng.normal(size=(3, 5, 6)).astype(np.float32) * 2
  labels = (rng.random((3, 5, 6)) < 0.4).astype(np.int32)
  labels[0, 0] = 255
  labels[2] = 0  # an image without foreground
  got = lovasz_hinge(logits, labels, per_image=per_image)
  np.testing.assert_allclose(got, ref.lovasz_hinge(logits, labels, per_image=per_image),
                             rtol=1e-5)
  grad = jax.grad(lambda x: lovasz_hinge(x, labels, per_image=per_image))(jnp.asarray(logits))
  numeric = ref.numerical_gradient(
      lambda x: ref.lovasz_hinge(x, labels, per_image=per_image), logits)
  np.testing.assert_allclose(grad, numeric, atol=2e-5)


def test_lovasz_hinge_variants_and_one_valid_pixel():
  rng = np.random.default_rng(10)
  logits = rng.normal(size=(2, 4, 4)).astype(np.float32)
  labels = (rng.random((2, 4, 4)) < 0.5).astype(np.int32)
  labels[1] = 255
  labels[1, 2, 2] = 1  # the reference crashes on an image with one valid pixel
  v, g = jax.value_and_grad(lovasz_hinge)(logits, labels)
  assert np.isfinite(v) and np.all(np.isfinite(g))
  np.testing.assert_allclose(v, ref.lovasz_hinge(logits, labels), rtol=1e-5)
  # Symmetric: mean of foreground and background hinges.
  flipped = np.where(labels == 255, 255, 1 - labels)
  sym = lovasz_hinge(logits, labels, symmetric=True)
  want = 0.5 * (ref.lovasz_hinge(logits, labels) + ref.lovasz_hinge(-logits, flipped))
  np.testing.assert_allclose(sym, want, rtol=1e-5)
  # elu+1 is strictly positive and orders like the hinge.
  elu = lovasz_hinge(logits, labels, hinge="elu+1")
  assert float(elu) > float(v)
  with pytest.raises(ValueError, match="hinge variant"):
    lovasz_hinge(logits, labels, hinge="square")


def test_lovasz_sigmoid_is_one_channel_lovasz_softmax():
  rng = np.random.default_rng(11)
  probs = rng.random((2, 5, 5)).astype(np.float32)
  labels = (rng.random((2, 5, 5)) < 0.3).astype(np.int32)
  labels[:, 0] = 255
  two_channel = np.stack([1 - probs, probs], -1)
  want = ref.lovasz_softmax(two_channel, labels, classes=[1], from_logits=False)
  np.testing.assert_allclose(lovasz_sigmoid(probs, labels), want, rtol=1e-5)
  logits = np.log(probs / (1 - probs))
  np.testing.assert_allclose(lovasz_sigmoid(logits, labels, from_logits=True), want, rtol=1e-4)


def test_registry_builds_lovasz_losses_and_sums(small_batch):
  logits, labels = small_batch
  fn = build_loss({"name": "lovasz_softmax", "kwargs": {"per_image": True}})
  np.testing.assert_allclose(fn(logits, labels), lovasz_softmax(logits, labels, per_image=True))
  combo = build_loss({"terms": [{"name": "lovasz_softmax", "weight": 0.5},
                                {"name": "lovasz_softmax", "weight": 2.0,
                                 "kwargs": {"classes": [0, 1]}}]})
  want = 0.5 * lovasz_softmax(logits, labels) + 2.0 * lovasz_softmax(logits, labels,
                                                                     classes=(0, 1))
  np.testing.assert_allclose(combo(logits, labels), want, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown loss"):
    build_loss({"name": "lovasz_cosine"})
  with pytest.raises(ValueError, match="does not take option"):
    build_loss({"name": "lovasz_softmax", "kwargs": {"per_imag": True}})
