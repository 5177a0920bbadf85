"""Dataset registry: metadata, TFDS preparation, random-access sources and ``get_dataset``.

Names: ``voc2012_segmentation`` and ``cityscapes`` (TFDS builders over the official archives in
the manual directory, prepared once into ``data_dir`` in the ArrayRecord format so that examples
can be read by index), ``shapes``, ``streets`` and ``circles`` (synthetic, in memory).

Every dataset is exposed as a :class:`Source`: a fixed number of examples addressable by index,
with a TensorFlow graph function ``fetch(index)`` that decodes one example. Index-based access is
what makes the training pipeline restartable at any step (``pipeline.py``).

The ``test`` splits of VOC and Cityscapes have no public labels: they are builders of their own
(prepared on first use, from ``VOC2012test.tar`` and from ``leftImg8bit/test/`` of the images
archive), and their sources give a label of all void (255) of the image's size, so that the
evaluation pipeline reads them as any other split (``Source.has_labels`` is False).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from typing import Any

import numpy as np
import tensorflow as tf

try:  # tf.data runs on the host only: keep TensorFlow off the accelerators (JAX owns them).
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # Devices already initialised by an earlier import; nothing to hide then.
    pass

import tensorflow_datasets as tfds  # noqa: E402

from jaxseg.data import cityscapes, synthetic, voc  # noqa: E402

IGNORE_INDEX = 255
NAMES = ("voc2012_segmentation", "cityscapes", "shapes", "streets", "circles")
_SPLIT_ALIASES = {"validation": "val", "valid": "val"}


@dataclasses.dataclass(frozen=True)
class _Builder:
    """A TFDS builder class with what preparing it needs from the manual directory."""

    cls: type
    missing_inputs: Any  # manual_dir -> list of missing archive names
    instructions: str


# (dataset, image-only split?) -> its builder.
_TFDS_BUILDERS = {
    ("voc2012_segmentation", False): _Builder(voc.Voc2012Segmentation, voc.missing_inputs,
                                              voc.MANUAL_INSTRUCTIONS),
    ("voc2012_segmentation", True): _Builder(voc.Voc2012SegmentationTest, voc.missing_test_inputs,
                                             voc.TEST_INSTRUCTIONS),
    ("cityscapes", False): _Builder(cityscapes.Cityscapes, cityscapes.missing_inputs,
                                    cityscapes.MANUAL_INSTRUCTIONS),
    ("cityscapes", True): _Builder(cityscapes.CityscapesTest, cityscapes.missing_test_inputs,
                                   cityscapes.TEST_INSTRUCTIONS),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    ``num_classes``/``class_names`` count the train ids (void = ``ignore_index`` excluded);
    ``splits`` maps split names to their nominal number of examples (synthetic: the defaults);
    ``image_only_splits`` are the splits without labels (VOC and Cityscapes ``test``);
    ``has_instances`` says whether examples carry an ``instance`` map; ``instance_classes`` are
    the class ids with instances (Cityscapes iIoU classes); ``category_names`` and
    ``class_to_category`` give Cityscapes' category grouping (empty elsewhere).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    splits: dict[str, int] = dataclasses.field(default_factory=dict)
    image_only_splits: tuple[str, ...] = ()
    train_split: str = "train"
    eval_split: str = "val"
    has_instances: bool = False
    instance_classes: tuple[int, ...] = ()
    category_names: tuple[str, ...] = ()
    class_to_category: tuple[int, ...] = ()
    synthetic: bool = False


def _synthetic_info(name: str, class_names: tuple[str, ...]) -> DatasetInfo:
    """Info of a synthetic dataset: its default split sizes, trained on ``train`` and evaluated on
    ``validation``."""
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        class_names=class_names,
        splits={s: synthetic.DEFAULT_SIZES[name][f"num_{s}"] for s in ("train", "validation", "test")},
        train_split="train",
        eval_split="validation",
        synthetic=True,
    )


_INFOS = {
    "voc2012_segmentation": DatasetInfo(
        name="voc2012_segmentation",
        num_classes=voc.NUM_CLASSES,
        class_names=voc.CLASS_NAMES,
        splits=dict(voc.SPLIT_SIZES),
        image_only_splits=("test",),
        train_split="train_aug",
        eval_split="val",
    ),
    "cityscapes": DatasetInfo(
        name="cityscapes",
        num_classes=cityscapes.NUM_CLASSES,
        class_names=cityscapes.CLASS_NAMES,
        splits=dict(cityscapes.SPLIT_SIZES),
        image_only_splits=("test",),
        train_split="train",
        eval_split="val",
        has_instances=True,
        instance_classes=cityscapes.INSTANCE_TRAIN_IDS,
        category_names=cityscapes.CATEGORY_NAMES,
        class_to_category=cityscapes.TRAIN_ID_TO_CATEGORY,
    ),
    "shapes": _synthetic_info("shapes", synthetic.SHAPES_CLASS_NAMES),
    "streets": _synthetic_info("streets", synthetic.STREETS_CLASS_NAMES),
    "circles": _synthetic_info("circles", synthetic.CIRCLES_CLASS_NAMES),
}


def _check_name(name: str) -> None:
    if name not in _INFOS:
        raise ValueError(f"Unknown dataset {name!r}; available: {list(NAMES)}")


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (one of :data:`NAMES`)."""
    _check_name(name)
    return _INFOS[name]


def canonical_split(name: str, split: str) -> str:
    """Canonical split name (``validation`` <-> ``val`` aliases), checked against the dataset."""
    _check_name(name)
    if _INFOS[name].synthetic:
        return synthetic.canonical_split(split)
    split = _SPLIT_ALIASES.get(split, split)
    if split not in _INFOS[name].splits:
        raise ValueError(f"Unknown split {split!r} for {name}; available: {sorted(_INFOS[name].splits)}")
    return split


def default_manual_dir(data_dir: str | None) -> str:
    """TFDS's default manual directory: ``<data_dir>/downloads/manual``."""
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    return os.path.join(data_dir, "downloads", "manual")


_prepare_lock = threading.Lock()


def prepared_builder(name: str, data_dir: str | None = None, manual_dir: str | None = None, *,
                     split: str | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``name`` in ``data_dir``, prepared from ``manual_dir`` if needed.

    ``split``: an image-only split (``test``) has a builder of its own; any other split, or None,
    gives the labelled splits' builder.

    Raises FileNotFoundError naming the expected archive(s) and the manual directory when the
    data is not prepared yet and the inputs are missing.
    """
    _check_name(name)
    if _INFOS[name].synthetic:
        raise ValueError(f"{name} is a synthetic dataset; it has no TFDS builder")
    image_only = split is not None and canonical_split(name, split) in _INFOS[name].image_only_splits
    spec = _TFDS_BUILDERS[(name, image_only)]
    with _prepare_lock:
        builder = spec.cls(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            manual = manual_dir or default_manual_dir(data_dir)
            missing = spec.missing_inputs(manual)
            if missing:
                what = f"the {split} split of {name}" if image_only else name
                raise FileNotFoundError(
                    f"Cannot prepare {what}: missing {', '.join(missing)} in the manual directory "
                    f"{manual}.\n{spec.instructions}"
                )
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    manual_dir=manual,
                    compute_stats=tfds.download.ComputeStatsMode.SKIP,
                ),
            )
    return builder


class Source:
    """A split as ``num_examples`` examples addressable by index.

    ``fetch(index, decode_image=True)`` is a TensorFlow graph function (usable in
    ``tf.data.Dataset.map``) returning ``image`` uint8 [H, W, 3], ``label`` uint8 [H, W] (all
    void when ``has_labels`` is False: an image-only split), ``instance`` int32 [H, W] when
    ``has_instances``, and ``id`` string.
    ``cache_dir`` is where derived data (split statistics) is cached, or None (in memory only).
    """

    name: str
    split: str
    num_examples: int
    has_labels: bool = True
    has_instances: bool = False
    cache_dir: str | None = None
    extra: dict[str, np.ndarray]

    def fetch(self, index: tf.Tensor, decode_image: bool = True) -> dict[str, tf.Tensor]:
        raise NotImplementedError


class _ArraySource(Source):
    """In-memory NumPy arrays (synthetic datasets)."""

    def __init__(self, name: str, split: str, arrays: dict[str, np.ndarray]):
        self.name, self.split = name, split
        self.num_examples = int(arrays["image"].shape[0])
        self.cache_dir = None
        self._tensors = {k: tf.constant(v) for k, v in arrays.items()}
        self.extra = {k: v for k, v in arrays.items() if k not in ("image", "label", "id")}

    def fetch(self, index, decode_image=True):
        out = {k: tf.gather(v, index) for k, v in self._tensors.items()}
        if not decode_image:
            out.pop("image")
        return out


class _TfdsSource(Source):
    """A prepared TFDS split read by index through its ArrayRecord data source; the serialized
    record is fetched in Python (cheap) and parsed/decoded in the TensorFlow graph."""

    def __init__(self, name: str, split: str, builder: tfds.core.DatasetBuilder):
        self.name, self.split = name, split
        self._features = builder.info.features
        self._records = builder.as_data_source(split=split).data_source
        self.num_examples = len(self._records)
        self.has_labels = "label" in self._features
        self.has_instances = "instance" in self._features
        self.cache_dir = os.fspath(builder.data_dir)
        self.extra = {}

    def _read(self, index) -> bytes:
        return self._records[int(index)]

    def fetch(self, index, decode_image=True):
        serialized = tf.numpy_function(self._read, [index], tf.string, stateful=False)
        serialized.set_shape([])
        # An image-only split's all-void label needs the image's size: decode it anyway.
        decoders = None if decode_image or not self.has_labels else {"image": tfds.decode.SkipDecoding()}
        ex = self._features.deserialize_example(serialized, decoders=decoders)
        if self.has_labels:
            label = tf.squeeze(ex["label"], -1)
        else:
            label = tf.fill(tf.shape(ex["image"])[:2], tf.constant(IGNORE_INDEX, tf.uint8))
        out = {"label": label, "id": ex["id"]}
        if decode_image:
            out["image"] = ex["image"]
        if self.has_instances:
            out["instance"] = tf.cast(tf.squeeze(ex["instance"], -1), tf.int32)
        return out


@functools.lru_cache(maxsize=32)
def _cached_source(name, split, data_dir, manual_dir, options_items) -> Source:
    options = dict(options_items)
    if _INFOS[name].synthetic:
        return _ArraySource(name, split, synthetic.generate(name, split, **options))
    if options:
        raise ValueError(f"Unknown option(s) {sorted(options)} for dataset {name!r} (it takes none)")
    return _TfdsSource(name, split, prepared_builder(name, data_dir, manual_dir, split=split))


def get_source(name: str, split: str, *, data_dir=None, manual_dir=None, **options) -> Source:
    """The random-access :class:`Source` of a split (prepared/generated once, then memoised)."""
    split = canonical_split(name, split)
    items = tuple(sorted((k, _freeze(v)) for k, v in options.items()))
    return _cached_source(name, split, data_dir, manual_dir, items)


def _freeze(v: Any):
    return tuple(v) if isinstance(v, list) else v


def get_dataset(name: str, split: str, *, data_dir=None, manual_dir=None, **options) -> tf.data.Dataset:
    """One pass over a split as an unbatched ``tf.data.Dataset`` of dicts, in a fixed order.

    Elements: ``image`` uint8 [H, W, 3], ``label`` uint8 [H, W] (train ids, 255 void; all 255 in
    an image-only split), ``id`` string (VOC: the image id; Cityscapes: ``<city>_<seq>_<frame>``);
    Cityscapes' labelled splits add ``instance`` int32 [H, W] (raw instanceIds:
    ``labelId * 1000 + k``); ``circles`` adds ``feature`` float32 [H, W] (the Sec. 4.1 per-pixel
    feature).

    Args:
      name: ``voc2012_segmentation``, ``cityscapes``, ``shapes``, ``streets`` or ``circles``.
      split: VOC ``train``/``val``/``train_aug``/``test`` (image-only, from ``VOC2012test.tar``);
        Cityscapes ``train``/``val``/``test`` (image-only); synthetic
        ``train``/``validation``/``test`` (``val`` and ``validation`` are accepted everywhere).
      data_dir: TFDS data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      manual_dir: where the official archives are (default ``<data_dir>/downloads/manual``).
      **options: synthetic only: ``image_size``, ``num_train``, ``num_validation``,
        ``num_test``, ``seed``; ``shapes`` and ``streets`` also ``noise`` (pixel noise sigma,
        default 18 and 14).
    """
    source = get_source(name, split, data_dir=data_dir, manual_dir=manual_dir, **options)
    ds = tf.data.Dataset.range(source.num_examples)
    return ds.map(source.fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
