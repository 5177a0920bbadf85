"""Multi-host data parallelism for real: two processes on localhost joined by
``jax.distributed.initialize`` (2 CPU devices each, a 4-device ``'data'`` mesh over both), each
feeding its half of the global batch, take the same training step as one process with one device.

The step has BatchNorm (global-batch statistics) and the batch-level Lovász-Softmax; the second
test runs the whole ``train_and_evaluate`` loop (per-host input pipelines, multi-process orbax
checkpoints, evaluation) on both processes and compares the saved parameters with a
single-process run.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEP_WORKER = textwrap.dedent(r'''
import json, sys
import numpy as np
import jax, jax.numpy as jnp
import flax.linen as nn
pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
from jaxseg import sharding
from jaxseg.training import optim, steps
if nproc > 1:
  sharding.initialize_distributed(f"127.0.0.1:{port}", nproc, pid)
from jaxseg.losses import build_loss
from jaxseg.training.state import TrainState
assert jax.process_count() == nproc and jax.process_index() == pid


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(6, (3, 3))(x)))
    return nn.Conv(4, (1, 1))(x)


rng = np.random.default_rng(0)
B, H, W = 8, 6, 6
images = rng.normal(size=(B, H, W, 3)).astype(np.float32)
labels = rng.integers(0, 4, size=(B, H, W)).astype(np.int32)
labels[rng.random((B, H, W)) < 0.1] = 255
model = Tiny()
variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, H, W, 3)), train=False)
sched = optim.create_learning_rate_schedule(num_train_steps=10, name="constant", base_lr=0.1)
tx = optim.create_optimizer(variables["params"], sched, name="sgd", momentum=0.9,
                            weight_decay=1e-3)
mesh = sharding.create_mesh() if nproc > 1 else sharding.create_mesh(jax.devices()[:1])
state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                          batch_stats=variables["batch_stats"], tx=tx, rng=jax.random.PRNGKey(3))
state = jax.device_put(state, sharding.replicated(mesh))
step = steps.make_train_step(mesh, loss_fn=build_loss({"name": "lovasz_softmax"}),
                             learning_rate_fn=sched)
b = B // nproc
losses = []
for k in range(2):
  local = {"image": np.roll(images, k, 0)[pid * b:(pid + 1) * b],
           "label": np.roll(labels, k, 0)[pid * b:(pid + 1) * b]}
  state, metrics = step(state, sharding.global_batch(local, mesh))
  losses.append(float(np.asarray(metrics["loss"].addressable_data(0))))
leaves = [np.asarray(x.addressable_data(0)).ravel().tolist()
          for x in jax.tree.leaves((state.params, state.batch_stats))]
if pid == 0:
  with open(out, "w") as f:
    json.dump({"devices": jax.device_count(), "losses": losses, "leaves": leaves}, f)
''')

LOOP_WORKER = textwrap.dedent(r'''
import sys
pid, nproc, port, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
from configs import common
from jaxseg.training import loop
c = common.base_config(common.data_config("shapes"))
c.data.crop_size = (16, 16)
c.data.options = {"image_size": 16, "num_train": 8, "num_validation": 4, "seed": 0}
c.model.options = {"base_channels": 4, "depth": 2}
c.batch_size, c.eval_batch_size, c.num_train_steps = 4, 4, 2
c.log_every_steps, c.checkpoint_every_steps, c.eval.max_batches = 1, 1, 1
c.progress_bar = c.tensorboard = c.figures = False
if nproc > 1:
  c.distributed.enabled = True
  c.distributed.coordinator_address = f"127.0.0.1:{port}"
  c.distributed.num_processes, c.distributed.process_id = nproc, pid
summary = loop.train_and_evaluate(c, workdir)
print("MIOU", summary["miou"])
''')


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # The workers import configs/common.py from the repository root.
  env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _run_pair(script, extra_args, timeout=600):
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, "-c", script, str(i), "2", port] + extra_args[i],
                            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append((p.returncode, out, err))
  for rc, out, err in outs:
    assert rc == 0, out[-2000:] + err[-4000:]
  return outs


def _run_single(script, args, timeout=600):
  p = subprocess.run([sys.executable, "-c", script, "0", "1", "0"] + args, env=_env(1),
                     capture_output=True, text=True, timeout=timeout)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
  return p.stdout


def test_two_processes_take_the_same_step_as_one(tmp_path):
  two, one = str(tmp_path / "two.json"), str(tmp_path / "one.json")
  _run_pair(STEP_WORKER, [[two], [two + ".unused"]])
  _run_single(STEP_WORKER, [one])
  with open(two) as f:
    r2 = json.load(f)
  with open(one) as f:
    r1 = json.load(f)
  assert r2["devices"] == 4 and r1["devices"] == 1
  np.testing.assert_allclose(r2["losses"], r1["losses"], atol=1e-5)
  assert len(r2["leaves"]) == len(r1["leaves"])
  for a, b in zip(r2["leaves"], r1["leaves"]):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_two_process_training_loop_matches_one_process(tmp_path):
  from jaxseg.training import checkpoint as ckpt_lib
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  outs = _run_pair(LOOP_WORKER, [[two], [two]])
  _run_single(LOOP_WORKER, [one])
  tree2, step2 = ckpt_lib.restore_raw(two)
  tree1, step1 = ckpt_lib.restore_raw(one)
  assert step1 == step2 == 2
  import jax
  for a, b in zip(jax.tree.leaves(tree2["params"]), jax.tree.leaves(tree1["params"])):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # Only process 0 writes the logs; both print the same evaluation.
  miou = [l for l in outs[0][1].splitlines() if l.startswith("MIOU")]
  assert miou and miou == [l for l in outs[1][1].splitlines() if l.startswith("MIOU")]
  with open(os.path.join(two, "metrics.jsonl")) as f:
    assert [json.loads(l)["step"] for l in f if '"train"' in l] == [1, 2]
