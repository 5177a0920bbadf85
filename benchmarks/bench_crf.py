"""Evaluation throughput with and without the dense CRF, and compile time of sliding-window
inference.

Usage (from the repository root; the CRF needs the ``crf`` extra, ``pip install -e '.[crf]'``):

    python benchmarks/bench_crf.py                       # both parts, median of 3 repeats
    python benchmarks/bench_crf.py --part crf --repeats 5 --workers 2
    python benchmarks/bench_crf.py --part compile

``crf``: ``jaxseg.evaluate.evaluate`` over ``--batches`` batches (default 6) of ``--batch`` random images of
``--size`` (default 4 x 256 x 320, 21 classes, about a VOC image) with ``unet_small`` (random
weights: the CRF's cost depends on the image size, the number of classes and the iterations,
not on the weights), once with the plain step (statistics on the device) and once with
``probabilities=True`` and ``crf=CRFParams(workers=...)`` (DeepLab-v2's parameters, 10
iterations), the CRF pool overlapped with the device. Each timing is one whole ``evaluate``
call after a first, untimed one (compilation; and for the CRF the pool's start, which every
``evaluate`` call pays again: reported separately); images/s = images / median seconds.

``compile``: lowering + XLA compilation of the evaluation step for one Cityscapes-sized image
(1 x 1024 x 2048, 19 classes, ``unet_small``), whole-image against sliding windows of 512 x 1024
at stride 341 x 683 (3 x 3 windows), scale 1 and scales (1, 0.75, 0.5) + flip; each measurement
in a fresh process with the compilation cache off.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(num_classes):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxseg import models  # pylint: disable=import-outside-toplevel
  model = models.create("unet_small", num_classes)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
  return model, variables


def bench_crf(args) -> list[dict]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxseg import evaluate as ev  # pylint: disable=import-outside-toplevel
  from jaxseg import metrics as m  # pylint: disable=import-outside-toplevel
  from jaxseg import sharding  # pylint: disable=import-outside-toplevel

  h, w = args.size
  model, variables = _model(args.classes)
  mesh = sharding.create_mesh()
  acc = m.MetricAccumulator(args.classes)
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(args.batches):
    # smooth random images (blobs), so that the bilateral kernel has edges to follow
    base = rng.normal(size=(args.batch, h // 16, w // 16, 3))
    images = np.repeat(np.repeat(base, 16, 1), 16, 2).astype(np.float32)
    batches.append({"image": images,
                    "label": rng.integers(0, args.classes, (args.batch, h, w)).astype(np.int32),
                    "example_mask": np.ones(args.batch, bool),
                    "size": np.tile(np.array([[h, w]], np.int32), (args.batch, 1))})
  n_images = args.batch * args.batches
  rows = []
  plain = ev.make_eval_step(mesh, model.apply, acc)
  with_probs = ev.make_eval_step(mesh, model.apply, acc, probabilities=True)
  crf = ev.CRFParams(workers=args.workers)
  for name, step, kwargs in [("without CRF", plain, {}),
                             ("with CRF", with_probs, {"crf": crf, "pixel_mean": (127.5,) * 3,
                                                       "pixel_std": (64.0,) * 3})]:
    t0 = time.perf_counter()
    ev.evaluate(step, variables, batches[:1], mesh, acc, **kwargs)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      ev.evaluate(step, variables, batches, mesh, acc, **kwargs)
      times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rows.append({"mode": name, "images": n_images, "median_s": med,
                 "images_per_s": n_images / med, "first_call_s": first,
                 "times": [round(t, 3) for t in times]})
    print(json.dumps(rows[-1]), flush=True)
  # The CRF alone, one image, in this process.
  probs = np.full((h, w, args.classes), 1.0 / args.classes, np.float32)
  probs[..., 0] += 0.1
  probs /= probs.sum(-1, keepdims=True)
  rgb = ev._to_rgb(batches[0]["image"][0], (127.5,) * 3, (64.0,) * 3)  # pylint: disable=protected-access
  t = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    ev.dense_crf(probs, rgb, crf)
    t.append(time.perf_counter() - t0)
  rows.append({"mode": "dense_crf alone, one image, one process",
               "median_s": statistics.median(t), "images_per_s": 1 / statistics.median(t)})
  print(json.dumps(rows[-1]), flush=True)
  return rows


def _compile_child(mode: str, multiscale: bool) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxseg import evaluate as ev  # pylint: disable=import-outside-toplevel
  from jaxseg import metrics as m  # pylint: disable=import-outside-toplevel
  from jaxseg import sharding  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_enable_compilation_cache", False)
  jax.jit(jnp.sort)(jnp.arange(8)).block_until_ready()   # backend initialisation, not counted
  model, variables = _model(19)
  mesh = sharding.create_mesh()
  acc = m.MetricAccumulator(19)
  kw = {"scales": (1.0, 0.75, 0.5), "flip": True} if multiscale else {}
  step = ev.make_eval_step(mesh, model.apply, acc, mode=mode, window=(512, 1024),
                           stride=(341, 683), **kw)
  batch = {"image": jax.ShapeDtypeStruct((1, 1024, 2048, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((1, 1024, 2048), jnp.int32),
           "example_mask": jax.ShapeDtypeStruct((1,), jnp.bool_),
           "size": jax.ShapeDtypeStruct((1, 2), jnp.int32)}
  t0 = time.perf_counter()
  lowered = step.lower(variables, batch)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return {"lower_s": t1 - t0, "compile_s": t2 - t1}


def bench_compile(args) -> list[dict]:
  rows = []
  for multiscale in (False, True):
    for mode in ("whole", "slide"):
      runs = []
      for _ in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--child", mode, str(int(multiscale))],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
      row = {"mode": mode, "views": "scales (1, 0.75, 0.5) + flip" if multiscale else "scale 1",
             "lower_s": statistics.median(r["lower_s"] for r in runs),
             "compile_s": statistics.median(r["compile_s"] for r in runs)}
      rows.append(row)
      print(json.dumps(row), flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--part", choices=["crf", "compile", "all"], default="all")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workers", type=int, default=0, help="CRF processes (0: CPU count)")
  parser.add_argument("--batches", type=int, default=6)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--size", type=int, nargs=2, default=(256, 320))
  parser.add_argument("--classes", type=int, default=21)
  parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_compile_child(args.child[0], bool(int(args.child[1])))))
    return
  if args.part in ("crf", "all"):
    bench_crf(args)
  if args.part in ("compile", "all"):
    bench_compile(args)


if __name__ == "__main__":
  main()
