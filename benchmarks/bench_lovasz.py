"""Forward + backward speed of Lovász-Softmax: jaxseg against a PyTorch reference, same run.

    python benchmarks/bench_lovasz.py                 # all cases, 7 repeats, CPU
    python benchmarks/bench_lovasz.py --repeats 3 --cases voc_batch,voc_image

Cases (logits ~ N(0, 1), or N(0, 1) + 4 on the true class for the "confident" cases):
  * VOC-like labels: background plus one to three objects per image, void (255) borders around
    the objects, 8 x 321 x 321 x 21 (the VOC training size); batch-level and per image.
  * All classes present ("uniform"): every class in every image, same size.
  * Cityscapes-sized: 2 x 512 x 1024 x 19, all classes present, batch-level.

jaxseg sorts only the pixels whose Jaccard increment can be non-zero (see
jaxseg/losses/extension.py), so its time depends on the logits: the confident cases show a
network that has learnt something, where more background pixels compete with the object.

Timings are medians of repeated runs after a warm-up (compilation excluded); the ratio is the
PyTorch median over the jaxseg median, both measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def voc_like_labels(rng, batch, height, width, num_classes):
  """Background plus one to three objects per image, with void borders around the objects."""
  yy, xx = np.mgrid[:height, :width]
  labels = np.zeros((batch, height, width), np.int32)
  for i in range(batch):
    for _ in range(rng.integers(1, 4)):
      cls = int(rng.integers(1, num_classes))
      cy, cx = rng.integers(0, height), rng.integers(0, width)
      ry, rx = rng.integers(height // 10, height // 3), rng.integers(width // 10, width // 3)
      d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
      labels[i][(d >= 1) & (d < 1.15) & (labels[i] != 0)] = 255
      labels[i][d < 1] = cls
      labels[i][(d >= 1) & (d < 1.15)] = 255
  return labels


def uniform_labels(rng, batch, height, width, num_classes):
  return rng.integers(0, num_classes, (batch, height, width)).astype(np.int32)


CASES = {
    # name: (labels, batch, height, width, classes, per_image[, confident])
    "voc_batch": (voc_like_labels, 8, 321, 321, 21, False),
    "voc_image": (voc_like_labels, 8, 321, 321, 21, True),
    "uniform_batch": (uniform_labels, 8, 321, 321, 21, False),
    "uniform_image": (uniform_labels, 8, 321, 321, 21, True),
    "cityscapes_batch": (uniform_labels, 2, 512, 1024, 19, False),
    # Logits of a network that has learnt something: N(0, 1) plus 4 on the true class.
    "voc_batch_confident": (voc_like_labels, 8, 321, 321, 21, False, True),
    "voc_image_confident": (voc_like_labels, 8, 321, 321, 21, True, True),
}


def median_time(fn, repeats):
  fn()  # warm-up (compilation)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--cases", default=",".join(CASES))
  parser.add_argument("--torch-device", default="cpu")
  parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import torch

  sys.path.insert(0, os.path.dirname(__file__))
  import torch_lovasz_reference as torch_ref
  from jaxseg.losses import lovasz_softmax

  torch.set_num_threads(args.torch_threads)
  device = jax.devices()[0]
  print(f"# jax {jax.__version__} on {device.platform} ({device.device_kind}); "
        f"torch {torch.__version__} on {args.torch_device} with {torch.get_num_threads()} "
        f"threads; {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
  print("| case | shape | present (image, class) rows | PyTorch reference | jaxseg | speed-up |")
  print("|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for name in args.cases.split(","):
    make_labels, b, h, w, c, per_image, *confident = CASES[name]
    labels = make_labels(rng, b, h, w, c)
    logits = rng.normal(size=(b, h, w, c)).astype(np.float32)
    if confident:
      logits += 4.0 * (labels[..., None] == np.arange(c))
    if per_image:
      present = sum(len(set(np.unique(l)) - {255}) for l in labels)
    else:
      present = len(set(np.unique(labels)) - {255})

    x = jax.device_put(jnp.asarray(logits))
    y = jax.device_put(jnp.asarray(labels))
    step = jax.jit(jax.value_and_grad(lambda a, l: lovasz_softmax(a, l, per_image=per_image)))

    def run_jax():
      jax.block_until_ready(step(x, y))

    tx = torch.tensor(logits.transpose(0, 3, 1, 2).copy(), device=args.torch_device)
    ty = torch.tensor(labels, device=args.torch_device, dtype=torch.int64)

    def run_torch():
      leaf = tx.clone().requires_grad_(True)
      loss = torch_ref.lovasz_softmax(leaf, ty, per_image=per_image)
      loss.backward()
      if args.torch_device != "cpu":
        torch.cuda.synchronize()

    # Same value, as a guard that both compute the same thing.
    leaf = tx.clone().requires_grad_(True)
    want = float(torch_ref.lovasz_softmax(leaf, ty, per_image=per_image))
    got = float(step(x, y)[0])
    assert abs(got - want) < 1e-4 * max(1.0, abs(want)), (name, got, want)

    t_torch = median_time(run_torch, args.repeats)
    t_jax = median_time(run_jax, args.repeats)
    print(f"| {name} | {b}x{h}x{w}x{c} | {present} | {t_torch:.3f} s | {t_jax:.3f} s | "
          f"{t_torch / t_jax:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
