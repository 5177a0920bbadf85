"""Data parallelism: a train step on 8 (simulated CPU) devices equals the step on 1 device.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before JAX starts, so the
checks run in a subprocess (one, shared by the tests of this module). The model has BatchNorm
(statistics of the global batch) and the loss is the batch-level Lovász-Softmax, whose value must
not depend on the number of devices; the all-to-all version of
:mod:`jaxseg.losses.sharded_lovasz` must give the plain loss's value and gradient.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(r'''
import json, sys
import numpy as np
import jax, jax.numpy as jnp
import flax.linen as nn
from jaxseg.losses import lovasz_softmax, build_loss
from jaxseg import sharding
from jaxseg.training import optim, steps
from jaxseg.training.state import TrainState
from jaxseg.losses.sharded_lovasz import lovasz_softmax_all_to_all

assert jax.device_count() == 8, jax.devices()
C = 5  # not a multiple of 8: padded classes on the all-to-all path


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(6, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    x = nn.Dropout(0.2, deterministic=not train)(x)
    return nn.Conv(C, (1, 1))(x)


rng = np.random.default_rng(0)
B, H, W = 8, 6, 7
images = rng.normal(size=(B, H, W, 3)).astype(np.float32)
labels = rng.integers(0, C - 1, size=(B, H, W)).astype(np.int32)  # class C-1 absent
labels[rng.random((B, H, W)) < 0.15] = 255
model = Tiny()
variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, H, W, 3)), train=False)
sched = optim.create_learning_rate_schedule(num_train_steps=10, name="poly", base_lr=0.1)
tx = optim.create_optimizer(variables["params"], sched, name="sgd", momentum=0.9,
                            weight_decay=5e-4,
                            param_groups=[{"pattern": "Conv_1", "lr_mult": 10.0}])
out = {}


def run(mesh, loss_fn, nsteps=2):
  rep = sharding.replicated(mesh)
  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            batch_stats=variables["batch_stats"], tx=tx,
                            rng=jax.random.PRNGKey(7))
  state = jax.device_put(state, rep)
  step = steps.make_train_step(mesh, loss_fn=loss_fn, learning_rate_fn=sched, donate=False)
  losses = []
  for k in range(nsteps):
    lab = np.roll(labels, k, axis=0)
    batch = sharding.global_batch({"image": np.roll(images, k, axis=0), "label": lab}, mesh)
    assert batch["image"].sharding.spec == sharding.data_sharded(mesh).spec
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  leaves = jax.tree.leaves(jax.device_get((state.params, state.batch_stats)))
  return losses, leaves


mesh1 = sharding.create_mesh(jax.devices()[:1])
mesh8 = sharding.create_mesh()
plain = build_loss({"name": "lovasz_softmax", "kwargs": {"per_image": False}})
l1, p1 = run(mesh1, plain)
l8, p8 = run(mesh8, plain)
la, pa = run(mesh8, lambda lg, lb: lovasz_softmax_all_to_all(lg, lb, mesh=mesh8))
out["losses"] = {"1dev": l1, "8dev": l8, "8dev_all_to_all": la}
out["max_param_diff_8"] = max(float(np.max(np.abs(a - b))) for a, b in zip(p1, p8))
out["max_param_diff_a2a"] = max(float(np.max(np.abs(a - b))) for a, b in zip(p1, pa))
out["param_change"] = max(float(np.max(np.abs(a - b))) for a, b in
                          zip(p1, jax.tree.leaves((variables["params"], variables["batch_stats"]))))

# Value and gradient of the all-to-all loss against the plain one, several class selections.
logits = jnp.asarray(rng.normal(size=(B, H, W, C)).astype(np.float32) * 2)
lab = jnp.asarray(labels)
checks = {}
for name, kw in [("present", {}), ("all", {"classes": "all"}), ("list", {"classes": (0, 4)})]:
  ref_v, ref_g = jax.value_and_grad(lambda x: lovasz_softmax(x, lab, **kw))(logits)
  xs = jax.device_put(logits, sharding.data_sharded(mesh8))
  ys = jax.device_put(lab, sharding.data_sharded(mesh8))
  f = jax.jit(jax.value_and_grad(lambda x, y: lovasz_softmax_all_to_all(x, y, mesh=mesh8, **kw)))
  v, g = f(xs, ys)
  checks[name] = {"value": float(v), "ref": float(ref_v),
                  "grad_diff": float(jnp.max(jnp.abs(g - ref_g))),
                  "grad_scale": float(jnp.max(jnp.abs(ref_g)))}
# All pixels void: 0 with zero gradient.
void = jnp.full_like(lab, 255)
v, g = jax.jit(jax.value_and_grad(lambda x: lovasz_softmax_all_to_all(x, void, mesh=mesh8)))(logits)
checks["void"] = {"value": float(v), "grad_abs": float(jnp.max(jnp.abs(g)))}
# The compiled all-to-all version holds an all-to-all and sorts 1 of the 8 class slots per device.
hlo = jax.jit(lambda x, y: lovasz_softmax_all_to_all(x, y, mesh=mesh8)).lower(xs, ys).compile().as_text()
checks["has_all_to_all"] = "all-to-all" in hlo
# The trainer's switch: config.global_lovasz_impl = 'all_to_all' builds the same loss.
import ml_collections
from jaxseg.training import loss_setup
cfg = ml_collections.ConfigDict({"loss": {"name": "lovasz_softmax",
                                          "kwargs": {"per_image": False, "classes": "all"}},
                                 "global_lovasz_impl": "all_to_all"})
fn = loss_setup.create_loss(cfg, mesh8, C)
checks["trainer_switch"] = abs(float(jax.jit(fn)(xs, ys)) - float(checks["all"]["ref"]))
# 'auto' on 8 devices, a weighted sum of terms: the Lovász term runs all-to-all, same value.
terms = {"terms": [{"name": "cross_entropy", "weight": 0.5},
                   {"name": "lovasz_softmax", "weight": 2.0, "kwargs": {"per_image": False}}]}
cfg = ml_collections.ConfigDict({"loss": terms, "global_lovasz_impl": "auto"})
fn = jax.jit(loss_setup.create_loss(cfg, mesh8, C))
ref = build_loss(terms)(logits, lab)
checks["trainer_auto_terms"] = abs(float(fn(xs, ys)) - float(ref))
checks["trainer_auto_terms_hlo"] = "all-to-all" in fn.lower(xs, ys).compile().as_text()
out["checks"] = checks
print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def result():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_train_step_same_on_8_devices_as_on_1(result):
  l1, l8 = result["losses"]["1dev"], result["losses"]["8dev"]
  assert len(l1) == 2
  for a, b in zip(l1, l8):
    assert abs(a - b) <= 1e-5, (l1, l8)
  assert result["max_param_diff_8"] <= 1e-5
  # The step did something (the comparison is not vacuous).
  assert result["param_change"] > 1e-3


def test_all_to_all_lovasz_train_step_matches(result):
  l1, la = result["losses"]["1dev"], result["losses"]["8dev_all_to_all"]
  for a, b in zip(l1, la):
    assert abs(a - b) <= 1e-5, (l1, la)
  assert result["max_param_diff_a2a"] <= 1e-5


@pytest.mark.parametrize("name", ["present", "all", "list"])
def test_all_to_all_lovasz_value_and_gradient(result, name):
  c = result["checks"][name]
  assert abs(c["value"] - c["ref"]) <= 1e-6 * max(1.0, abs(c["ref"])), c
  assert c["grad_scale"] > 0
  assert c["grad_diff"] <= 1e-6, c


def test_all_to_all_lovasz_void_batch_lowering_and_config_switch(result):
  assert result["checks"]["void"] == {"value": 0.0, "grad_abs": 0.0}
  assert result["checks"]["has_all_to_all"]
  assert result["checks"]["trainer_switch"] <= 1e-6
  assert result["checks"]["trainer_auto_terms"] <= 1e-5
  assert result["checks"]["trainer_auto_terms_hlo"]
