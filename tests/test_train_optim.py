"""Optimisers, schedules, weight decay, per-group learning rates and clipping (optax chains)
against hand-written float64 NumPy updates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.training import optim


def _params():
  rng = np.random.default_rng(0)
  return {"backbone": {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
                                "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}},
          "head": {"kernel": jnp.asarray(rng.normal(size=(1, 1, 4, 3)), jnp.float32),
                   "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}}


def _grads(seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params())


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


@pytest.mark.parametrize("warmup", [0, 10])
def test_poly_schedule(warmup):
  total, base, power = 100, 2.5e-4, 0.9
  f = optim.create_learning_rate_schedule(
      num_train_steps=total, name="poly", base_lr=base, power=power, warmup_steps=warmup)
  for k in [0, 1, 5, 9, 10, 11, 50, 99, 100, 150]:
    if k < warmup:
      want = base * k / warmup
    else:
      want = base * (1 - min((k - warmup) / (total - warmup), 1.0)) ** power
    np.testing.assert_allclose(float(f(k)), want, rtol=1e-5, atol=1e-12)


def test_cosine_constant_piecewise_schedules():
  f = optim.create_learning_rate_schedule(num_train_steps=40, name="cosine", base_lr=1.0,
                                          end_lr=0.1)
  for k in [0, 10, 20, 40]:
    np.testing.assert_allclose(float(f(k)), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 40)),
                               rtol=1e-6)
  g = optim.create_learning_rate_schedule(num_train_steps=10, name="constant", base_lr=0.3)
  assert float(g(7)) == pytest.approx(0.3)
  h = optim.create_learning_rate_schedule(
      num_train_steps=10, name="piecewise", boundaries=[5], learning_rates=[5e-4, 1e-4])
  assert [float(h(k)) for k in (0, 4, 5, 9)] == pytest.approx([5e-4, 5e-4, 1e-4, 1e-4])


def test_bad_schedule_and_optimizer_names():
  with pytest.raises(ValueError, match="schedule"):
    optim.create_learning_rate_schedule(num_train_steps=10, name="step")
  with pytest.raises(ValueError, match="len\\(learning_rates\\)"):
    optim.create_learning_rate_schedule(num_train_steps=10, name="piecewise", boundaries=[1],
                                        learning_rates=[1])
  with pytest.raises(ValueError, match="optimizer"):
    optim.create_optimizer(_params(), lambda s: 0.1, name="lamb")
  with pytest.raises(ValueError, match="pattern"):
    optim.create_optimizer(_params(), lambda s: 0.1, name="sgd",
                           param_groups=[{"lr_mult": 2.0}])


def test_sgd_momentum_l2_weight_decay_and_head_multiplier():
  """Caffe's SGD: v <- mu v + (g + wd w) (kernels only), w <- w - lr * mult * v."""
  lr, mu, wd = 0.1, 0.9, 5e-3
  params = _params()
  tx = optim.create_optimizer(
      params, lambda s: lr, name="sgd", momentum=mu, weight_decay=wd,
      param_groups=[{"pattern": r"^head/", "lr_mult": 10.0},
                    {"pattern": r"backbone/conv/bias", "lr_mult": 0.0}])
  state = tx.init(params)
  w = _np(params)
  v = jax.tree.map(np.zeros_like, w)
  mult = {"backbone": {"conv": {"kernel": 1.0, "bias": 0.0}}, "head": {"kernel": 10.0,
                                                                       "bias": 10.0}}
  decay = {"backbone": {"conv": {"kernel": wd, "bias": 0.0}}, "head": {"kernel": wd, "bias": 0.0}}
  p = params
  for step in range(3):
    g = _grads(step + 1)
    updates, state = tx.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)
    v = jax.tree.map(lambda vv, gg, ww, d: mu * vv + gg + d * ww, v, _np(g), w, decay)
    w = jax.tree.map(lambda ww, vv, m: ww - lr * m * vv, w, v, mult)
  for a, b in zip(jax.tree.leaves(_np(p)), jax.tree.leaves(w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # lr_mult 0 froze the bias.
  np.testing.assert_array_equal(np.asarray(p["backbone"]["conv"]["bias"]),
                                np.asarray(params["backbone"]["conv"]["bias"]))


def _adam_reference(w, grads, lr, wd, decoupled, b1=0.9, b2=0.999, eps=1e-8):
  m = np.zeros_like(w)
  v = np.zeros_like(w)
  for t, g in enumerate(grads, start=1):
    if not decoupled:
      g = g + wd * w
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    w = w - lr * mhat / (np.sqrt(vhat) + eps) - (lr * wd * w if decoupled else 0.0)
  return w


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_l2_and_adamw_decoupled(name):
  lr, wd = 0.01, 0.1
  params = {"k": jnp.asarray(np.random.default_rng(3).normal(size=(4, 5)), jnp.float32)}
  tx = optim.create_optimizer(params, lambda s: lr, name=name, weight_decay=wd)
  state = tx.init(params)
  gs = [np.random.default_rng(10 + i).normal(size=(4, 5)) for i in range(3)]
  p = params
  for g in gs:
    u, state = tx.update({"k": jnp.asarray(g, jnp.float32)}, state, p)
    p = jax.tree.map(lambda a, b: a + b, p, u)
  want = _adam_reference(np.asarray(params["k"], np.float64), gs, lr, wd, name == "adamw")
  np.testing.assert_allclose(np.asarray(p["k"]), want, rtol=1e-4, atol=1e-6)


def test_gradient_clipping_by_global_norm():
  params = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}
  tx = optim.create_optimizer(params, lambda s: 1.0, name="sgd", momentum=0.0,
                              clip_grad_norm=1.0)
  g = {"a": jnp.asarray([3.0, 0.0, 0.0]), "b": jnp.asarray([[4.0, 0.0], [0.0, 0.0]])}
  u, _ = tx.update(g, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(u["a"]), [-0.6, 0, 0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(u["b"]), [[-0.8, 0], [0, 0]], atol=1e-6)


def test_weight_decay_mask():
  mask = optim.weight_decay_mask(_params(), "kernels")
  assert mask["head"]["kernel"] and not mask["head"]["bias"]
  assert all(jax.tree.leaves(optim.weight_decay_mask(_params(), "all")))
  with pytest.raises(ValueError, match="weight_decay_on"):
    optim.weight_decay_mask(_params(), "conv")
