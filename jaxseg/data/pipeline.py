"""The training and evaluation input pipelines (tf.data on the host, NumPy batches out).

``create_train_iterator`` yields, for this host, its slice of the global batch at every step:
the global batch at step ``k`` holds the global samples ``g = k*B .. k*B + B - 1``; host ``p`` of
``P`` takes ``g = k*B + p*b + j`` for ``j < b = B / P``. Sample ``g`` is fully determined by
``(seed, g)``: its example (epoch permutation or equibatch cycle, :mod:`jaxseg.data.equibatch`,
or class-balanced batches for one class, :mod:`jaxseg.data.class_balanced`) and its augmentation
(stateless RNG keyed by ``(seed, g)``, :mod:`jaxseg.data.augment`). Hence the batch at step
``k`` is a pure function of ``(seed, k)``, a run restarted with ``start_step=k`` yields exactly
what an uninterrupted run yields from step ``k`` on, the hosts read disjoint samples, and the
global batch does not depend on the number of hosts.

``create_eval_iterator`` makes one pass over the split in a fixed order, whole images padded to a
static size, the last global batch completed with filler examples (``example_mask`` False, label
255 everywhere) so that every host yields the same number of batches.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

try:  # tf.data runs on the host only: keep TensorFlow off the accelerators (JAX owns them).
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass

import ml_collections  # noqa: E402

from jaxseg.data import augment, class_balanced, datasets, equibatch, statistics  # noqa: E402

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


# The per-dataset fields of default_data_config, in the order they are set.
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "voc2012_segmentation": dict(
        crop_size=(321, 321), scale_range=(0.5, 1.5), flip=True,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, eval_pad_size=(512, 512),
    ),
    "cityscapes": dict(
        crop_size=(512, 1024), scale_range=(0.5, 0.5), flip=False,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, eval_pad_size=(1024, 2048),
    ),
    "shapes": dict(
        crop_size=(64, 64), scale_range=(0.75, 1.25), flip=True,
        mean=(127.5, 127.5, 127.5), std=(64.0, 64.0, 64.0), eval_pad_size=None,
        options={"image_size": 64, "num_train": 256, "num_validation": 64, "seed": 0},
    ),
    "circles": dict(
        crop_size=(50, 50), scale_range=(1.0, 1.0), flip=False,
        # feature = (x - 127.5) / 31.875
        mean=(127.5, 127.5, 127.5), std=(31.875, 31.875, 31.875), eval_pad_size=None,
        options={"image_size": 50, "num_train": 10, "num_validation": 10, "seed": 0},
    ),
}


def default_data_config(name: str) -> ml_collections.ConfigDict:
    """A complete data config for ``name`` (the fields of the contract, plus pipeline knobs).

    * ``voc2012_segmentation``: train ``train_aug`` / eval ``val``, 321 x 321 crops, scale
      [0.5, 1.5], flip, ImageNet mean/std, eval padded to 512 x 512 (VOC images are <= 500 x 500).
    * ``cityscapes``: train ``train`` / eval ``val``, the paper's ENet fine-tuning input (Sec. 4):
      whole frames at half resolution (scale 0.5, 512 x 1024 crop of a 1024 x 2048 frame), no flip;
      eval at native resolution padded to 1024 x 2048.
    * ``shapes``: 64 x 64 images, 256 train / 64 validation, crop 64, scale [0.75, 1.25], flip.
    * ``circles``: the Sec. 4.1 data (10 images 50 x 50), no augmentation.

    Sampling: ``equibatch`` (cycle over the classes, Berman et al., CVPR 2018, Sec. 3.1) or ``class_balanced`` with
    ``class_id >= 0`` (every global batch holds ``fraction * B`` rounded half up images containing
    ``class_id`` and the rest without it, :mod:`jaxseg.data.class_balanced`; ``class_id = -1``,
    the default, is off); otherwise epoch-wise permutations.
    """
    info = datasets.dataset_info(name)
    c = ml_collections.ConfigDict()
    c.name = name
    c.train_split = info.train_split
    c.eval_split = info.eval_split
    c.data_dir = None
    c.manual_dir = None
    c.equibatch = False
    c.class_balanced = ml_collections.ConfigDict({"class_id": -1, "fraction": 0.5})
    c.options = {}
    c.num_parallel_calls = -1  # tf.data.AUTOTUNE
    c.prefetch = 2
    for key, value in _DATASET_DEFAULTS[name].items():
        setattr(c, key, value)
    return c


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    try:
        value = cfg[key]
    except (KeyError, AttributeError):
        return default
    return default if value is None and default is not None else value


def _options(cfg) -> dict:
    opts = _get(cfg, "options", {}) or {}
    return dict(opts.to_dict() if hasattr(opts, "to_dict") else opts)


def _hosts(global_batch_size: int, process_index: int | None, process_count: int | None) -> tuple[int, int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    p, n = int(process_index), int(process_count)
    if n < 1 or not 0 <= p < n:
        raise ValueError(f"process_index must be in [0, process_count), got {p} of {n}")
    if global_batch_size < 1 or global_batch_size % n:
        raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of process_count {n}")
    return p, n, global_batch_size // n


def _location_and_options(cfg) -> dict:
    """Keyword arguments locating a config's dataset: ``data_dir``, ``manual_dir`` and its options."""
    return dict(data_dir=_get(cfg, "data_dir"), manual_dir=_get(cfg, "manual_dir"), **_options(cfg))


def _source(cfg, split_key: str) -> datasets.Source:
    return datasets.get_source(cfg["name"], cfg[split_key], **_location_and_options(cfg))


def _class_balanced(cfg) -> tuple[int, float] | None:
    """``(class_id, fraction)`` of ``cfg.class_balanced``, or None where it is off."""
    cb = _get(cfg, "class_balanced")
    if cb is None:
        return None
    class_id = int(_get(cb, "class_id", -1))
    if class_id < 0:
        return None
    return class_id, float(_get(cb, "fraction", 0.5))


def make_schedule(data_config, seed: int, *, global_batch_size: int | None = None):
    """The sampling schedule ``g -> (example index, target class)`` of a training config.

    ``global_batch_size`` is needed by (only) the class-balanced schedule, which balances each
    global batch.
    """
    cfg = data_config
    source = _source(cfg, "train_split")
    balanced = _class_balanced(cfg)
    if balanced is not None:
        if _get(cfg, "equibatch", False):
            raise ValueError("data.equibatch and data.class_balanced (class_id >= 0) are two different "
                             "samplers: enable only one of them.")
        if global_batch_size is None:
            raise ValueError("data.class_balanced balances each global batch: make_schedule needs "
                             "global_batch_size.")
        class_id, fraction = balanced
        stats = statistics.split_statistics(cfg["name"], cfg["train_split"], **_location_and_options(cfg))
        return class_balanced.ClassBalancedSchedule(
            stats.image_class_presence, class_id, global_batch_size, seed, fraction=fraction)
    if _get(cfg, "equibatch", False):
        stats = statistics.split_statistics(cfg["name"], cfg["train_split"], **_location_and_options(cfg))
        return equibatch.EquibatchSchedule(stats.image_class_presence, seed)
    return equibatch.EpochSchedule(source.num_examples, seed)


def _train_dataset(
    data_config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tf.data.Dataset:
    """The ``tf.data.Dataset`` behind :func:`create_train_iterator` (batched, infinite)."""
    cfg = data_config
    p, _, b = _hosts(global_batch_size, process_index, process_count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    source = _source(cfg, "train_split")
    schedule = make_schedule(cfg, seed, global_batch_size=global_batch_size)
    ignore = datasets.dataset_info(cfg["name"]).ignore_index
    aug_kwargs = dict(
        crop_size=augment.as_hw(tuple(cfg["crop_size"]) if not isinstance(cfg["crop_size"], int) else cfg["crop_size"]),
        scale_range=tuple(_get(cfg, "scale_range", (1.0, 1.0))),
        flip=bool(_get(cfg, "flip", False)),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        ignore_index=ignore,
    )
    B = int(global_batch_size)

    def plan(g):
        index, target = schedule(g)
        return np.int64(index), np.int32(target)

    def load(t):
        k, j = t // b, t % b
        g = k * B + p * b + j
        index, target = tf.numpy_function(plan, [g], [tf.int64, tf.int32], stateful=False)
        index.set_shape([])
        target.set_shape([])
        ex = source.fetch(index)
        image, label = augment.train_augment(
            ex["image"], ex["label"], augment.sample_key(seed, g), target_class=target, **aug_kwargs
        )
        return {"image": image, "label": label}

    par = int(_get(cfg, "num_parallel_calls", -1))
    par = tf.data.AUTOTUNE if par < 0 else par
    ds = tf.data.Dataset.counter(start=int(start_step) * b, dtype=tf.int64)
    ds = ds.map(load, num_parallel_calls=par, deterministic=True)
    ds = ds.batch(b, drop_remainder=True)
    ds = ds.prefetch(int(_get(cfg, "prefetch", 2)))
    opts = tf.data.Options()
    opts.deterministic = True
    return ds.with_options(opts)


def create_train_iterator(
    data_config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of this host's training batches (see the module docstring).

    Yields ``{"image": float32 [b, h, w, 3] normalised, "label": int32 [b, h, w]}`` with
    ``b = global_batch_size / process_count`` and ``(h, w) = crop_size``; the batch of step
    ``start_step + n`` is the ``n``-th one yielded. ``process_index``/``process_count`` default to
    ``jax.process_index()``/``jax.process_count()``.
    """
    ds = _train_dataset(
        data_config,
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
    )
    return ds.as_numpy_iterator()


def eval_pad_size(data_config) -> tuple[int, int]:
    """The static eval size: ``eval_pad_size`` or, if None, the eval split's largest image."""
    cfg = data_config
    pad = _get(cfg, "eval_pad_size")
    if pad is not None:
        return augment.as_hw(tuple(pad) if not isinstance(pad, int) else pad)
    stats = statistics.split_statistics(
        cfg["name"], cfg["eval_split"], data_dir=_get(cfg, "data_dir"), manual_dir=_get(cfg, "manual_dir"), **_options(cfg)
    )
    return stats.max_height, stats.max_width


def _eval_dataset(
    data_config, *, global_batch_size: int, process_index: int | None = None, process_count: int | None = None
) -> tf.data.Dataset:
    """The ``tf.data.Dataset`` behind :func:`create_eval_iterator` (finite, batched)."""
    cfg = data_config
    p, _, b = _hosts(global_batch_size, process_index, process_count)
    source = _source(cfg, "eval_split")
    pad = eval_pad_size(cfg)
    ignore = datasets.dataset_info(cfg["name"]).ignore_index
    mean = tuple(float(v) for v in cfg["mean"])
    std = tuple(float(v) for v in cfg["std"])
    n = source.num_examples
    B = int(global_batch_size)
    num_batches = math.ceil(n / B)

    def load(t):
        k, j = t // b, t % b
        g = k * B + p * b + j
        valid = g < n
        ex = source.fetch(tf.minimum(g, n - 1))
        out = augment.eval_preprocess(
            ex["image"], ex["label"], pad_size=pad, mean=mean, std=std, ignore_index=ignore, instance=ex.get("instance")
        )
        out["label"] = tf.where(valid, out["label"], ignore)
        out["image"] = tf.where(valid, out["image"], 0.0)
        if "instance" in out:
            out["instance"] = tf.where(valid, out["instance"], 0)
        out["example_mask"] = valid
        return out

    par = int(_get(cfg, "num_parallel_calls", -1))
    par = tf.data.AUTOTUNE if par < 0 else par
    ds = tf.data.Dataset.range(num_batches * b).map(load, num_parallel_calls=par, deterministic=True)
    ds = ds.batch(b, drop_remainder=True).prefetch(int(_get(cfg, "prefetch", 2)))
    return ds


def create_eval_iterator(
    data_config, *, global_batch_size: int, process_index: int | None = None, process_count: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over ``eval_split``: this host's part of each global batch.

    Yields ``{"image": float32 [b, H, W, 3], "label": int32 [b, H, W] (255 = void and padding),
    "example_mask": bool [b], "size": int32 [b, 2] (original height, width), and for Cityscapes
    "instance": int32 [b, H, W] (0 = padding)}`` with ``(H, W)`` from :func:`eval_pad_size`.
    Examples are in source order, global example ``k*B + p*b + j`` at host ``p`` row ``j`` of
    batch ``k``; ``ceil(N / B)`` batches on every host.
    """
    ds = _eval_dataset(
        data_config, global_batch_size=global_batch_size, process_index=process_index, process_count=process_count
    )
    return ds.as_numpy_iterator()
