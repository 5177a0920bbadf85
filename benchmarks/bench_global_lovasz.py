"""Batch-level Lovász-Softmax on a batch sharded over devices: plain jit vs all-to-all.

    python benchmarks/bench_global_lovasz.py [--devices 8] [--repeats 5]

Simulates ``--devices`` CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count``, set
before JAX starts) and times forward + backward of the batch-level Lovász-Softmax on a global
batch sharded along the ``'data'`` mesh axis:

* ``plain``: ``jax.jit`` of ``jaxseg.losses.lovasz_softmax`` (per_image=False) with the logits
  sharded ``P('data')``: XLA all-gathers the errors and every device sorts every class over the
  whole batch (the same work on every device);
* ``all_to_all``: :func:`jaxseg.losses.sharded_lovasz.lovasz_softmax_all_to_all`: one
  all-to-all moves the errors onto the class axis, each device sorts its ``C / D`` classes;
* ``one device``: the plain loss on the unsharded batch on a single device (the yardstick).

Prints a Markdown table (median of ``--repeats`` timed runs after one warm-up) and checks that
both give the same value and gradient. On one host the simulated devices share its cores, so the
gain measured here is the work removed (``D`` - fold fewer sorts); on real accelerators the
sorts also run in parallel.
"""

import argparse
import os
import sys
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--cases", default="8x64x64x21:realistic,8x128x128x21:realistic,"
                                         "8x128x128x21:uniform")
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxseg.losses import lovasz_softmax  # pylint: disable=g-import-not-at-top
  from jaxseg import sharding  # pylint: disable=g-import-not-at-top
  from jaxseg.losses.sharded_lovasz import lovasz_softmax_all_to_all  # pylint: disable=g-import-not-at-top

  mesh = sharding.create_mesh()
  print(f"JAX {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices, "
        f"{os.cpu_count()} host cores", file=sys.stderr)

  def labels_for(kind, b, h, w, c, rng):
    if kind == "uniform":
      return rng.integers(0, c, size=(b, h, w)).astype(np.int32)
    lab = np.zeros((b, h, w), np.int32)   # background + 1-3 objects per image
    for i in range(b):
      for _ in range(rng.integers(1, 4)):
        cls = rng.integers(1, c)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        lab[i, y:y + h // 3, x:x + w // 3] = cls
    lab[:, :2] = 255
    return lab

  def timed(fn, *xs):
    out = fn(*xs)
    jax.block_until_ready(out)
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn(*xs))
      times.append(time.perf_counter() - t)
    return float(np.median(times)), out

  rows = []
  for case in args.cases.split(","):
    shape, kind = case.split(":")
    b, h, w, c = (int(v) for v in shape.split("x"))
    rng = np.random.default_rng(0)
    logits = jax.device_put(jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32),
                            sharding.data_sharded(mesh))
    labels = jax.device_put(jnp.asarray(labels_for(kind, b, h, w, c, rng)),
                            sharding.data_sharded(mesh))
    present = len(set(np.unique(np.asarray(labels)).tolist()) - {255})
    plain = jax.jit(jax.value_and_grad(lambda x, y: lovasz_softmax(x, y, per_image=False)))
    a2a = jax.jit(jax.value_and_grad(lambda x, y: lovasz_softmax_all_to_all(x, y, mesh=mesh)))
    hlo_plain = plain.lower(logits, labels).compile().as_text()
    hlo_a2a = a2a.lower(logits, labels).compile().as_text()
    t_plain, (v_plain, g_plain) = timed(plain, logits, labels)
    t_a2a, (v_a2a, g_a2a) = timed(a2a, logits, labels)
    dev0 = jax.devices()[0]
    one = jax.jit(jax.value_and_grad(lambda x, y: lovasz_softmax(x, y, per_image=False)))
    t_one, _ = timed(one, jax.device_put(logits, dev0), jax.device_put(labels, dev0))
    dv = abs(float(v_plain) - float(v_a2a))
    dg = float(jnp.max(jnp.abs(g_plain - g_a2a)))
    rows.append((f"{b}x{h}x{w}x{c}", kind, present, t_plain, t_a2a, t_plain / t_a2a, dv, dg,
                 "all-gather" in hlo_plain, "all-to-all" in hlo_a2a, t_one))
    print(rows[-1], file=sys.stderr, flush=True)

  print(f"| batch B x H x W x C | labels | classes present | plain jit, sharded (s) "
        f"| all-to-all (s) | speed-up | plain, one device (s) | abs. value diff | max grad diff |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.1f}x | {r[10]:.3f} "
          f"| {r[6]:.1e} | {r[7]:.1e} |")
  print(f"\n{jax.device_count()} simulated CPU devices; forward + backward, median of "
        f"{args.repeats}; plain HLO all-gathers: {all(r[8] for r in rows)}; all-to-all HLO "
        f"has an all-to-all: {all(r[9] for r in rows)}.")


if __name__ == "__main__":
  main()
