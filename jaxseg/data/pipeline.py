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
255 everywhere, id ``b""``) so that every host yields the same number of batches. Each example
carries its ``id`` and original ``size``, what a prediction is written under and cropped to; an
image-only split (``test``) has labels of all void, so that one code path reads every split.
(Folders of the user's own images: :mod:`jaxseg.data.image_folder`.)
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

try:  # tf.data runs on the host only: keep TensorFlow off the accelerators (JAX owns them).
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:
    pass

from jaxseg.data import augment, class_balanced, datasets, statistics  # noqa: E402
from jaxseg.data import equibatch as equibatch_lib  # noqa: E402

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


def _location(data_dir: str | None, manual_dir: str | None, options: Mapping[str, Any] | None) -> dict:
    """The keyword arguments that find a dataset (``""`` and ``None``: not given) and set up its builder."""
    return dict(data_dir=data_dir or None, manual_dir=manual_dir or None, **dict(options or {}))


def _source(name: str, split: str, data_dir: str | None, manual_dir: str | None,
            options: Mapping[str, Any] | None) -> datasets.Source:
    return datasets.get_source(name, split, **_location(data_dir, manual_dir, options))


def make_schedule(
    *,
    name: str,
    split: str,
    seed: int,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    options: Mapping[str, Any] | None = None,
    equibatch: bool = False,
    class_balanced_class: int = -1,
    class_balanced_fraction: float = 0.5,
    global_batch_size: int | None = None,
):
    """The sampling schedule ``g -> (example index, target class)`` of a training split.

    ``equibatch``: cycle over the classes (Berman et al., CVPR 2018, Sec. 3.1,
    :class:`~jaxseg.data.equibatch.EquibatchSchedule`); ``class_balanced_class >= 0``: every global
    batch of ``global_batch_size`` holds ``class_balanced_fraction * B`` (rounded half up) images
    containing that class and the rest without it (:mod:`jaxseg.data.class_balanced`); otherwise
    epoch-wise permutations.
    """
    location = _location(data_dir, manual_dir, options)
    if int(class_balanced_class) >= 0:
        if equibatch:
            raise ValueError("data.equibatch and data.class_balanced (class_id >= 0) are two different "
                             "samplers: enable only one of them.")
        if global_batch_size is None:
            raise ValueError("data.class_balanced balances each global batch: make_schedule needs "
                             "global_batch_size.")
        stats = statistics.split_statistics(name, split, **location)
        return class_balanced.ClassBalancedSchedule(
            stats.image_class_presence, int(class_balanced_class), global_batch_size, seed,
            fraction=float(class_balanced_fraction))
    if equibatch:
        stats = statistics.split_statistics(name, split, **location)
        return equibatch_lib.EquibatchSchedule(stats.image_class_presence, seed)
    return equibatch_lib.EpochSchedule(_source(name, split, data_dir, manual_dir, options).num_examples,
                                       seed)


def _one_class(label: tf.Tensor, binary_class: int, ignore_index: int) -> tf.Tensor:
    """Labels ``[y == c]`` of a one-class-against-the-rest task, void kept (``binary_class = c``)."""
    return tf.where(label == ignore_index, label, tf.cast(label == binary_class, label.dtype))


def _parallelism(num_parallel_calls: int) -> int:
    return tf.data.AUTOTUNE if int(num_parallel_calls) < 0 else int(num_parallel_calls)


def create_train_iterator(
    *,
    name: str,
    split: str,
    crop_size: int | Sequence[int],
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    scale_range: Sequence[float] = (1.0, 1.0),
    flip: bool = False,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    data_dir: str | None = None,
    manual_dir: str | None = None,
    options: Mapping[str, Any] | None = None,
    equibatch: bool = False,
    class_balanced_class: int = -1,
    class_balanced_fraction: float = 0.5,
    binary_class: int = -1,
    num_parallel_calls: int = -1,
    prefetch: int = 2,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of this host's training batches (see the module docstring).

    Arguments: the dataset ``name`` and its training ``split``, where it is (``data_dir``,
    ``manual_dir``, builder ``options``), ``global_batch_size``, ``seed``, ``start_step`` (the batch of step ``start_step + n`` is the ``n``-th one yielded), the sampler
    (``equibatch``, or ``class_balanced_class`` >= 0 with ``class_balanced_fraction``, see
    :func:`make_schedule`), the augmentation (``crop_size``, ``scale_range``, ``flip``, ``mean`` /
    ``std`` normalisation, :func:`jaxseg.data.augment.train_augment`), ``binary_class`` (>= 0:
    labels ``[y == c]``, void kept), ``num_parallel_calls`` (-1: autotune), ``prefetch``, and
    ``process_index`` / ``process_count`` (default ``jax.process_index()`` /
    ``jax.process_count()``).

    Yields ``{"image": float32 [b, h, w, 3] normalised, "label": int32 [b, h, w]}`` with
    ``b = global_batch_size / process_count`` and ``(h, w) = crop_size``.
    """
    p, _, b = _hosts(global_batch_size, process_index, process_count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    source = _source(name, split, data_dir, manual_dir, options)
    schedule = make_schedule(
        name=name, split=split, seed=seed, data_dir=data_dir, manual_dir=manual_dir, options=options,
        equibatch=equibatch, class_balanced_class=class_balanced_class,
        class_balanced_fraction=class_balanced_fraction, global_batch_size=global_batch_size)
    ignore = datasets.dataset_info(name).ignore_index
    aug_kwargs = dict(
        crop_size=augment.as_hw(crop_size if isinstance(crop_size, int) else tuple(crop_size)),
        scale_range=tuple(float(v) for v in scale_range),
        flip=bool(flip),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
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
        if binary_class >= 0:
            label = _one_class(label, binary_class, ignore)
        return {"image": image, "label": label}

    ds = tf.data.Dataset.counter(start=int(start_step) * b, dtype=tf.int64)
    ds = ds.map(load, num_parallel_calls=_parallelism(num_parallel_calls), deterministic=True)
    ds = ds.batch(b, drop_remainder=True)
    ds = ds.prefetch(int(prefetch))
    opts = tf.data.Options()
    opts.deterministic = True
    return ds.with_options(opts).as_numpy_iterator()


def eval_pad_size(*, name: str, split: str, pad_size: int | Sequence[int] | None = None,
                  data_dir: str | None = None, manual_dir: str | None = None,
                  options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """The static evaluation size: ``pad_size`` or, if None, the split's largest image."""
    if pad_size is not None:
        return augment.as_hw(pad_size if isinstance(pad_size, int) else tuple(pad_size))
    stats = statistics.split_statistics(name, split, **_location(data_dir, manual_dir, options))
    return stats.max_height, stats.max_width


def create_eval_iterator(
    *,
    name: str,
    split: str,
    global_batch_size: int,
    pad_size: int | Sequence[int] | None = None,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    data_dir: str | None = None,
    manual_dir: str | None = None,
    options: Mapping[str, Any] | None = None,
    binary_class: int = -1,
    num_parallel_calls: int = -1,
    prefetch: int = 2,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over an evaluation split: this host's part of each global batch.

    Arguments: ``name``, ``split``, ``data_dir``, ``manual_dir``, ``options``,
    ``global_batch_size``, ``pad_size`` (the static size, :func:`eval_pad_size`), ``mean`` /
    ``std``, ``binary_class``, ``num_parallel_calls``, ``prefetch``, ``process_index`` /
    ``process_count``, as for :func:`create_train_iterator`.

    Yields ``{"image": float32 [b, H, W, 3], "label": int32 [b, H, W] (255 = void and padding;
    all void in an image-only split), "example_mask": bool [b], "size": int32 [b, 2] (original
    height, width), "id": bytes [b] (the example's id, ``b""`` for filler), and for Cityscapes'
    labelled splits "instance": int32 [b, H, W] (0 = padding)}``. Examples are in source order,
    global example ``k*B + p*b + j`` at host ``p`` row ``j`` of batch ``k``; ``ceil(N / B)``
    batches on every host.
    """
    p, _, b = _hosts(global_batch_size, process_index, process_count)
    source = _source(name, split, data_dir, manual_dir, options)
    pad = eval_pad_size(name=name, split=split, pad_size=pad_size, data_dir=data_dir,
                        manual_dir=manual_dir, options=options)
    ignore = datasets.dataset_info(name).ignore_index
    mean = tuple(float(v) for v in mean)
    std = tuple(float(v) for v in std)
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
        if binary_class >= 0:
            out["label"] = _one_class(out["label"], binary_class, ignore)
        out["label"] = tf.where(valid, out["label"], ignore)
        out["image"] = tf.where(valid, out["image"], 0.0)
        if "instance" in out:
            out["instance"] = tf.where(valid, out["instance"], 0)
        out["example_mask"] = valid
        out["id"] = tf.where(valid, ex["id"], "")
        return out

    ds = tf.data.Dataset.range(num_batches * b).map(
        load, num_parallel_calls=_parallelism(num_parallel_calls), deterministic=True)
    return ds.batch(b, drop_remainder=True).prefetch(int(prefetch)).as_numpy_iterator()
