"""Split statistics, computed once over a whole split at native resolution and cached.

* ``class_pixel_counts[c]``: number of pixels labelled ``c`` over the split (void excluded) — what
  margin calibration (Yu et al., IJCV 2022: ``n``, ``n1``, ``n0`` per class) and class-weighted
  losses (ENet's ``w_c = 1 / ln(1.02 + p_c)``, Paszke et al. 2016) need.
* ``image_class_presence[i, c]``: whether example ``i`` (source order) has a pixel of class
  ``c`` — the class-presence index of equibatch sampling (Berman et al., CVPR 2018, Sec. 3.1).
* ``mean_instance_sizes[c]``: for datasets with instances (Cityscapes), the mean pixel count of
  the instances of class ``c`` (instance ids ``labelId * 1000 + k``), NaN for classes without
  instances — the weights ``mean_size / instance_size`` of Cityscapes' instance-level iIoU.
* ``max_height``/``max_width``: the largest image, the default static padding for evaluation.

For TFDS datasets the result is cached as ``jaxseg_statistics_<split>.json`` in the prepared
dataset's directory (next to its ``dataset_info.json``); synthetic ones are memoised in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading

import numpy as np
import tensorflow as tf

from jaxseg.data import cityscapes, datasets

_FORMAT_VERSION = 1
_memo: dict = {}
_memo_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class SplitStatistics:
    """Statistics of one split (see the module docstring); arrays are read-only NumPy."""

    name: str
    split: str
    num_examples: int
    num_classes: int
    class_pixel_counts: np.ndarray  # int64 [C]
    void_pixel_count: int
    image_class_presence: np.ndarray  # bool [N, C]
    mean_instance_sizes: np.ndarray | None  # float64 [C] or None
    instance_counts: np.ndarray | None  # int64 [C] or None
    max_height: int
    max_width: int

    @property
    def class_frequencies(self) -> np.ndarray:
        """``class_pixel_counts / sum(class_pixel_counts)`` (float64 [C])."""
        total = self.class_pixel_counts.sum()
        return self.class_pixel_counts / max(int(total), 1)

    def to_json(self) -> dict:
        return {
            "format": _FORMAT_VERSION,
            "name": self.name,
            "split": self.split,
            "num_examples": self.num_examples,
            "num_classes": self.num_classes,
            "class_pixel_counts": [int(v) for v in self.class_pixel_counts],
            "void_pixel_count": int(self.void_pixel_count),
            "classes_present_per_image": [np.flatnonzero(r).tolist() for r in self.image_class_presence],
            "mean_instance_sizes": None
            if self.mean_instance_sizes is None
            else [None if np.isnan(v) else float(v) for v in self.mean_instance_sizes],
            "instance_counts": None if self.instance_counts is None else [int(v) for v in self.instance_counts],
            "max_height": self.max_height,
            "max_width": self.max_width,
        }

    @classmethod
    def from_json(cls, d: dict) -> "SplitStatistics":
        n, c = d["num_examples"], d["num_classes"]
        presence = np.zeros((n, c), bool)
        for i, present in enumerate(d["classes_present_per_image"]):
            presence[i, present] = True
        mis = d["mean_instance_sizes"]
        return _frozen(
            cls(
                name=d["name"],
                split=d["split"],
                num_examples=n,
                num_classes=c,
                class_pixel_counts=np.asarray(d["class_pixel_counts"], np.int64),
                void_pixel_count=int(d["void_pixel_count"]),
                image_class_presence=presence,
                mean_instance_sizes=None if mis is None else np.asarray([np.nan if v is None else v for v in mis], np.float64),
                instance_counts=None if d["instance_counts"] is None else np.asarray(d["instance_counts"], np.int64),
                max_height=int(d["max_height"]),
                max_width=int(d["max_width"]),
            )
        )


def _frozen(s: SplitStatistics) -> SplitStatistics:
    for v in (s.class_pixel_counts, s.image_class_presence, s.mean_instance_sizes, s.instance_counts):
        if v is not None:
            v.setflags(write=False)
    return s


def compute_statistics(source: datasets.Source, num_classes: int) -> SplitStatistics:
    """One pass over ``source`` (labels and instances only; images are not decoded)."""
    n = source.num_examples
    counts = np.zeros(num_classes, np.int64)
    void = 0
    presence = np.zeros((n, num_classes), bool)
    inst_sum = np.zeros(num_classes, np.float64)
    inst_cnt = np.zeros(num_classes, np.int64)
    max_h = max_w = 0

    def fetch(i):
        ex = source.fetch(i, decode_image=False)
        return {k: v for k, v in ex.items() if k in ("label", "instance")}

    ds = tf.data.Dataset.range(n).map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(4)
    for i, ex in enumerate(ds.as_numpy_iterator()):
        label = ex["label"]
        max_h, max_w = max(max_h, label.shape[0]), max(max_w, label.shape[1])
        bc = np.bincount(label.ravel(), minlength=256)
        extra = np.flatnonzero(bc[num_classes:255])
        if extra.size:
            raise ValueError(
                f"{source.name}/{source.split} example {i}: label value {num_classes + int(extra[0])} "
                f"is outside the classes 0..{num_classes - 1} and 255"
            )
        counts += bc[:num_classes]
        void += int(bc[255])
        presence[i] = bc[:num_classes] > 0
        if "instance" in ex:
            inst = ex["instance"]
            ids, sizes = np.unique(inst[inst >= 1000], return_counts=True)
            train_ids = cityscapes.LABEL_ID_TO_TRAIN_ID[np.minimum(ids // 1000, 255)]
            ok = train_ids != 255
            np.add.at(inst_sum, train_ids[ok], sizes[ok])
            np.add.at(inst_cnt, train_ids[ok], 1)
    has_inst = source.has_instances
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sizes = np.where(inst_cnt > 0, inst_sum / np.maximum(inst_cnt, 1), np.nan) if has_inst else None
    return _frozen(
        SplitStatistics(
            name=source.name,
            split=source.split,
            num_examples=n,
            num_classes=num_classes,
            class_pixel_counts=counts,
            void_pixel_count=void,
            image_class_presence=presence,
            mean_instance_sizes=mean_sizes,
            instance_counts=inst_cnt if has_inst else None,
            max_height=max_h,
            max_width=max_w,
        )
    )


def split_statistics(
    name: str, split: str, *, data_dir=None, manual_dir=None, recompute: bool = False, **options
) -> SplitStatistics:
    """The :class:`SplitStatistics` of a split, computed on first use and cached.

    Same arguments as :func:`jaxseg.data.get_dataset`; ``recompute=True`` ignores the cache.
    """
    source = datasets.get_source(name, split, data_dir=data_dir, manual_dir=manual_dir, **options)
    num_classes = datasets.dataset_info(name).num_classes
    key = (name, source.split, data_dir, manual_dir, tuple(sorted(options.items())))
    with _memo_lock:
        if not recompute and key in _memo:
            return _memo[key]
    path = None
    if source.cache_dir is not None:
        path = os.path.join(source.cache_dir, f"jaxseg_statistics_{source.split}.json")
        if not recompute and os.path.exists(path):
            with open(path) as f:
                d = json.load(f)
            if d.get("format") == _FORMAT_VERSION and d.get("num_examples") == source.num_examples:
                stats = SplitStatistics.from_json(d)
                with _memo_lock:
                    _memo[key] = stats
                return stats
    stats = compute_statistics(source, num_classes)
    if path is not None:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(stats.to_json(), f)
        os.replace(tmp, path)
    with _memo_lock:
        _memo[key] = stats
    return stats
