"""Input-pipeline throughput: VOC-sized JPEGs -> 321 x 321 training crops, alone and next to a
training step.

What it measures (median over ``--repeats``):

1. ``pipeline alone``: images/s of ``jaxseg.data.create_train_iterator`` on the VOC builder
   (decode JPEG 500 x 375 -> random scale [0.5, 1.5] -> pad -> 321 x 321 crop -> flip ->
   normalise), with nothing else running.
2. For each model (``jaxseg.models.create``): the jitted training step alone (forward + backward
   of masked cross-entropy + SGD-momentum update on a fixed batch), then the pipeline's images/s
   while that step runs continuously in a second thread (both share the cores), then a real
   training loop fed by the pipeline: seconds per step and the part of it spent waiting for the
   next batch (the target is ~0: the step never waits for data).

The dataset is written to a temporary directory in the official VOC 2012 + SBD layout
(``jaxseg.data.testing``) with ``--num-images`` 500 x 375 JPEGs of smooth random scenes (about the
size of VOC's JPEGs), and prepared by the real TFDS builder.

    python benchmarks/bench_input_pipeline.py --models unet_small,deeplabv3plus_resnet50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _voc_like_image(rng, h, w):
    """Smooth colour field + a few flat blobs + mild noise: JPEG sizes near VOC's (~60-120 kB)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        for _ in range(3):
            fy, fx = rng.uniform(0.5, 6, size=2) * 2 * np.pi / np.array([h, w])
            img[..., c] += rng.uniform(10, 40) * np.sin(fy * yy + fx * xx + rng.uniform(0, 6.3))
        img[..., c] += rng.uniform(60, 190)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(15, 90)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_voc(root: str, num_images: int) -> str:
    from jaxseg.data import testing

    ids = [f"2008_{i:06d}" for i in range(num_images)]
    half = num_images // 2
    testing.write_voc_sbd(
        os.path.join(root, "manual"),
        voc_train=ids[:half],
        voc_val=ids[-2:],
        sbd_train=ids[half:-2],
        sbd_val=[],
        size=[(375, 500), (500, 375), (333, 500)],
        image_fn=_voc_like_image,
    )
    return root


def pipeline_rate(it, batch: int, warmup: int, batches: int) -> float:
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batch * batches / (time.perf_counter() - t)


def build_step(model_name: str, num_classes: int, batch: int, crop: int):
    import jax
    import jax.numpy as jnp
    import optax

    from jaxseg import models

    model = models.create(model_name, num_classes)
    x = jnp.zeros((batch, crop, crop, 3), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.sgd(1e-3, momentum=0.9)
    opt_state = tx.init(params)

    def loss_fn(p, bs, images, labels):
        out, upd = model.apply({"params": p, "batch_stats": bs}, images, train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.PRNGKey(1)})
        valid = labels != 255
        ce = optax.softmax_cross_entropy_with_integer_labels(out, jnp.where(valid, labels, 0))
        return jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1), upd["batch_stats"]

    @jax.jit
    def step(p, bs, o, images, labels):
        (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, bs, images, labels)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), bs, o, loss

    state = [params, batch_stats, opt_state]

    def run(images, labels):
        p, bs, o, loss = step(state[0], state[1], state[2], images, labels)
        loss.block_until_ready()
        state[:] = [p, bs, o]
        return float(loss)

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="unet_small,deeplabv3plus_resnet50")
    ap.add_argument("--batch", type=int, default=4, help="global batch size (images per step)")
    ap.add_argument("--crop", type=int, default=321)
    ap.add_argument("--num-images", type=int, default=48)
    ap.add_argument("--batches", type=int, default=12, help="batches timed per pipeline measurement")
    ap.add_argument("--steps", type=int, default=4, help="training steps timed per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=None, help="reuse a directory (written if empty)")
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    import jax

    import jaxseg.data as jd

    root = args.data_dir or tempfile.mkdtemp(prefix="bench_voc_")
    if not os.path.isdir(os.path.join(root, "manual")):
        t = time.perf_counter()
        make_voc(root, args.num_images)
        print(f"wrote {args.num_images} JPEGs in {time.perf_counter() - t:.1f}s to {root}")
    # The VOC training input of configs/common.py (scale [0.5, 1.5], flip, ImageNet statistics).
    cfg = dict(name="voc2012_segmentation", split="train_aug", data_dir=os.path.join(root, "data"),
               manual_dir=os.path.join(root, "manual"), crop_size=(args.crop, args.crop),
               scale_range=(0.5, 1.5), flip=True, mean=(123.675, 116.28, 103.53),
               std=(58.395, 57.12, 57.375))
    t = time.perf_counter()
    n = jd.get_source("voc2012_segmentation", "train_aug", data_dir=cfg["data_dir"],
                      manual_dir=cfg["manual_dir"]).num_examples
    print(f"prepared train_aug ({n} images) in {time.perf_counter() - t:.1f}s")

    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "jax_devices": [str(d) for d in jax.devices()],
        "command": " ".join([os.path.basename(sys.executable), "benchmarks/bench_input_pipeline.py"] + (argv or sys.argv[1:])),
        "batch": args.batch,
        "crop": args.crop,
        "num_images": n,
        "load_average_start": os.getloadavg(),
    }

    def fresh_iterator(seed):
        return jd.create_train_iterator(**cfg, global_batch_size=args.batch, seed=seed, process_index=0, process_count=1)

    rates = []
    for r in range(args.repeats):
        rates.append(pipeline_rate(fresh_iterator(r), args.batch, warmup=2, batches=args.batches))
    results["pipeline_alone_images_per_s"] = statistics.median(rates)
    print(f"pipeline alone: {results['pipeline_alone_images_per_s']:.1f} images/s (runs {np.round(rates, 1).tolist()})")

    results["models"] = {}
    sample = next(fresh_iterator(99))
    for name in [m for m in args.models.split(",") if m]:
        entry = {}
        try:
            t = time.perf_counter()
            step = build_step(name, 21, args.batch, args.crop)
            step(sample["image"], sample["label"])  # compile
            entry["compile_s"] = time.perf_counter() - t
        except Exception as e:  # a model that cannot be built is recorded, not fatal
            entry["error"] = f"{type(e).__name__}: {e}"
            results["models"][name] = entry
            print(f"{name}: cannot run ({entry['error']})")
            continue
        # 1. step alone
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            step(sample["image"], sample["label"])
            times.append(time.perf_counter() - t)
        entry["step_alone_s"] = statistics.median(times)
        # 2. pipeline throughput while the step runs continuously in another thread
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                step(sample["image"], sample["label"])

        th = threading.Thread(target=spin, daemon=True)
        th.start()
        conc = []
        for r in range(args.repeats):
            conc.append(pipeline_rate(fresh_iterator(100 + r), args.batch, warmup=1, batches=max(2, args.batches // 2)))
        stop.set()
        th.join()
        entry["pipeline_concurrent_images_per_s"] = statistics.median(conc)
        # 3. a training loop fed by the pipeline: time per step and time waiting for data
        loop_step, loop_wait = [], []
        for r in range(args.repeats):
            it = fresh_iterator(200 + r)
            batch = next(it)
            step(batch["image"], batch["label"])
            waits, totals = [], []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                batch = next(it)
                t1 = time.perf_counter()
                step(batch["image"], batch["label"])
                t2 = time.perf_counter()
                waits.append(t1 - t0)
                totals.append(t2 - t0)
            loop_step.append(statistics.median(totals))
            loop_wait.append(statistics.median(waits))
        entry["loop_step_s"] = statistics.median(loop_step)
        entry["loop_data_wait_s"] = statistics.median(loop_wait)
        entry["step_images_per_s"] = args.batch / entry["step_alone_s"]
        results["models"][name] = entry
        print(
            f"{name}: step alone {entry['step_alone_s']:.3f}s ({entry['step_images_per_s']:.1f} img/s), "
            f"pipeline while stepping {entry['pipeline_concurrent_images_per_s']:.1f} img/s, "
            f"loop {entry['loop_step_s']:.3f}s/step of which waiting for data {entry['loop_data_wait_s']:.4f}s"
        )
    results["load_average_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
