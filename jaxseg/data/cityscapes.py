"""Cityscapes (fine annotations) as jaxseg's own TFDS builder.

TFDS's stock ``cityscapes`` builder requires 1024 x 2048 frames, needs the test folders and keeps
the raw labelIds (0-33) without instance ids; this one reads, from the manual directory, the
official ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` (or their extracted
``leftImg8bit/`` and ``gtFine/`` folders), at any image size, and stores

* ``image``: the ``*_leftImg8bit.png`` bytes unchanged,
* ``label``: train ids (0-18, 255 void) from ``*_gtFine_labelIds.png`` through the official
  cityscapesScripts table (:data:`LABEL_ID_TO_TRAIN_ID`),
* ``instance``: the raw ``*_gtFine_instanceIds.png`` values (``labelId * 1000 + k`` for the k-th
  instance of a class with instances, the bare labelId for stuff and crowd regions), so that the
  instance-level iIoU can be computed,
* ``id``: ``<city>_<seq>_<frame>``.

Splits: ``train`` (2975) and ``val`` (500). The ``test`` split (1525 frames, no public labels) is
a builder of its own, :class:`CityscapesTest`, prepared on first use from the
``leftImg8bit/test/`` folders of the same images archive (images only).

Every file is checked while the dataset is prepared, before any training step: a corrupt image or
label image, a labelId outside the official table, an instance id outside ``0..33999``, an image
or instance map whose size differs from its labelIds, a missing label file raise an error naming
the file(s) (:class:`~jaxseg.data.archives.DataError`, ``FileNotFoundError``).

:data:`TRAIN_ID_TO_LABEL_ID` maps predicted train ids back to labelIds, the values
cityscapesScripts' evaluation and the benchmark server read.
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data import archives
from jaxseg.data.voc import check_image

IMAGES_ARCHIVE = "leftImg8bit_trainvaltest.zip"
IMAGES_FOLDER = "leftImg8bit"
LABELS_ARCHIVE = "gtFine_trainvaltest.zip"
LABELS_FOLDER = "gtFine"

# The official cityscapesScripts label table (helpers/labels.py):
# (name, labelId, trainId, category, hasInstances). labelId -1 (license plate) is stored as 255
# in uint8 label images by some tools; both map to void.
LABELS: tuple[tuple[str, int, int, str, bool], ...] = (
    ("unlabeled", 0, 255, "void", False),
    ("ego vehicle", 1, 255, "void", False),
    ("rectification border", 2, 255, "void", False),
    ("out of roi", 3, 255, "void", False),
    ("static", 4, 255, "void", False),
    ("dynamic", 5, 255, "void", False),
    ("ground", 6, 255, "void", False),
    ("road", 7, 0, "flat", False),
    ("sidewalk", 8, 1, "flat", False),
    ("parking", 9, 255, "flat", False),
    ("rail track", 10, 255, "flat", False),
    ("building", 11, 2, "construction", False),
    ("wall", 12, 3, "construction", False),
    ("fence", 13, 4, "construction", False),
    ("guard rail", 14, 255, "construction", False),
    ("bridge", 15, 255, "construction", False),
    ("tunnel", 16, 255, "construction", False),
    ("pole", 17, 5, "object", False),
    ("polegroup", 18, 255, "object", False),
    ("traffic light", 19, 6, "object", False),
    ("traffic sign", 20, 7, "object", False),
    ("vegetation", 21, 8, "nature", False),
    ("terrain", 22, 9, "nature", False),
    ("sky", 23, 10, "sky", False),
    ("person", 24, 11, "human", True),
    ("rider", 25, 12, "human", True),
    ("car", 26, 13, "vehicle", True),
    ("truck", 27, 14, "vehicle", True),
    ("bus", 28, 15, "vehicle", True),
    ("caravan", 29, 255, "vehicle", True),
    ("trailer", 30, 255, "vehicle", True),
    ("train", 31, 16, "vehicle", True),
    ("motorcycle", 32, 17, "vehicle", True),
    ("bicycle", 33, 18, "vehicle", True),
)

LABEL_ID_TO_TRAIN_ID = np.full(256, 255, np.uint8)
# Train id -> labelId of the 19 evaluated classes (what a prediction is written as); the void
# train id 255 -> 0 ("unlabeled"), which no arg-max produces.
TRAIN_ID_TO_LABEL_ID = np.zeros(256, np.uint8)
for _name, _lid, _tid, _cat, _inst in LABELS:
    LABEL_ID_TO_TRAIN_ID[_lid] = _tid
    if _tid != 255:
        TRAIN_ID_TO_LABEL_ID[_tid] = _lid
VALID_LABEL_IDS = frozenset([lid for _, lid, _, _, _ in LABELS] + [255])  # 255 = license plate (-1)

CLASS_NAMES: tuple[str, ...] = tuple(n for n, _, t, _, _ in sorted(LABELS, key=lambda r: r[2]) if t != 255)
NUM_CLASSES = len(CLASS_NAMES)  # 19
CATEGORY_NAMES: tuple[str, ...] = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
# Train id -> category index (Cityscapes' category-level IoU).
TRAIN_ID_TO_CATEGORY: tuple[int, ...] = tuple(
    CATEGORY_NAMES.index(c) for _, _, t, c, _ in sorted(LABELS, key=lambda r: r[2]) if t != 255
)
# Train ids of the classes with instances (the iIoU classes): person .. bicycle.
INSTANCE_TRAIN_IDS: tuple[int, ...] = tuple(sorted(t for _, _, t, _, i in LABELS if i and t != 255))
SPLIT_SIZES = {"train": 2975, "val": 500, "test": 1525}
# Largest value of an instanceIds image: labelId 33 (bicycle) * 1000 + 999.
MAX_INSTANCE_ID = 33999

MANUAL_INSTRUCTIONS = f"""\
Place in the manual directory the official Cityscapes archives `{IMAGES_ARCHIVE}` and
`{LABELS_ARCHIVE}` (or their extracted `{IMAGES_FOLDER}/` and `{LABELS_FOLDER}/` folders).
"""
TEST_INSTRUCTIONS = f"""\
For the test split, place in the manual directory the official Cityscapes archive
`{IMAGES_ARCHIVE}` (or its extracted `{IMAGES_FOLDER}/` folder, with `{IMAGES_FOLDER}/test/`).
"""


def missing_inputs(manual_dir: str | None) -> list[str]:
    return archives.missing(manual_dir, ((IMAGES_ARCHIVE, IMAGES_FOLDER), (LABELS_ARCHIVE, LABELS_FOLDER)))


def missing_test_inputs(manual_dir: str | None) -> list[str]:
    """The images archive is all the test split needs."""
    return archives.missing(manual_dir, ((IMAGES_ARCHIVE, IMAGES_FOLDER),))


def _frames(images: archives.FileTree, splits) -> dict[str, list[str]]:
    """``{split: [<split>/<city>/<stem>_leftImg8bit.png, ...]}`` in name order; FileNotFoundError
    for a split without frames."""
    frames: dict[str, list[str]] = {s: [] for s in splits}
    for rel in sorted(images.names()):
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] in frames and parts[2].endswith("_leftImg8bit.png"):
            frames[parts[0]].append(rel)
    for split, rels in frames.items():
        if not rels:
            raise FileNotFoundError(
                f"No {split} images found in {images.describe(split + '/')} "
                f"(expected {IMAGES_FOLDER}/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png)"
            )
    return frames


def labelids_to_trainids(label_ids: np.ndarray, where: str = "label") -> np.ndarray:
    """Maps a labelIds array to train ids with the official table; ValueError on unknown ids."""
    values = np.unique(label_ids)
    bad = [int(v) for v in values if int(v) not in VALID_LABEL_IDS]
    if bad:
        raise archives.DataError(
            f"{where}: label value {bad[0]} is not a Cityscapes labelId (0..33; bad values {bad[:10]})")
    return LABEL_ID_TO_TRAIN_ID[label_ids.astype(np.int64)]


def _decode_png(data: bytes, where: str) -> np.ndarray:
    arr = np.asarray(archives.decode_image(data, where, what="label image"))
    if arr.ndim != 2:
        raise archives.DataError(f"{where}: expected a single-channel PNG, got shape {arr.shape}")
    return arr


def _read_label(labels: archives.FileTree, rel: str, image_where: str) -> tuple[np.ndarray, str]:
    """The decoded label PNG ``rel`` and its location; FileNotFoundError naming the image too."""
    if not labels.exists(rel):
        raise FileNotFoundError(f"No label for the image {image_where}: expected {labels.describe(rel)}")
    return _decode_png(labels.read(rel), labels.describe(rel)), labels.describe(rel)


class Cityscapes(tfds.core.GeneratorBasedBuilder):
    """Cityscapes fine annotations: train ids + instance ids, any frame size."""

    name = "jaxseg_cityscapes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "train/val with train ids (19 classes) and instance ids."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Cityscapes fine annotations (train ids and raw instance ids).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                    "instance": tfds.features.Image(shape=(None, None, 1), dtype=np.uint16, encoding_format="png"),
                    "id": tfds.features.Text(),
                }
            ),
            homepage="https://www.cityscapes-dataset.com/",
        )

    def _split_generators(self, dl_manager):
        manual = str(dl_manager.manual_dir)
        archives.require_inputs(manual, missing_inputs(manual), MANUAL_INSTRUCTIONS)
        images = archives.FileTree(*archives.locate(manual, IMAGES_ARCHIVE, IMAGES_FOLDER))
        labels = archives.FileTree(*archives.locate(manual, LABELS_ARCHIVE, LABELS_FOLDER))
        frames = _frames(images, ("train", "val"))
        return {s: self._generate_examples(images, labels, rels) for s, rels in frames.items()}

    def _generate_examples(self, images, labels, rels):
        for rel in rels:
            split, city, fname = rel.split("/")
            stem = fname[: -len("_leftImg8bit.png")]
            where = images.describe(rel)
            label_ids, lab_where = _read_label(labels, f"{split}/{city}/{stem}_gtFine_labelIds.png", where)
            label = labelids_to_trainids(label_ids, lab_where)
            inst, inst_where = _read_label(labels, f"{split}/{city}/{stem}_gtFine_instanceIds.png", where)
            inst = inst.astype(np.int64)
            if inst.shape != label.shape:
                raise archives.DataError(f"{inst_where}: size {inst.shape} differs from its labelIds' "
                                         f"size {label.shape} ({lab_where})")
            if inst.size and (inst.min() < 0 or inst.max() > MAX_INSTANCE_ID):
                raise archives.DataError(f"{inst_where}: instance id {int(inst.max())} is outside "
                                         f"0..{MAX_INSTANCE_ID} (labelId * 1000 + k)")
            data = images.read(rel)
            check_image(data, where, label.shape, lab_where)
            yield stem, {
                "image": io.BytesIO(data),
                "label": label[..., None],
                "instance": inst.astype(np.uint16)[..., None],
                "id": stem,
            }


class CityscapesTest(tfds.core.GeneratorBasedBuilder):
    """Cityscapes test frames (split ``test``, images only: the labels are not public)."""

    name = "jaxseg_cityscapes_test"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The 1525 frames of leftImg8bit/test, image-only."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = TEST_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Cityscapes test frames (labels are not public).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "id": tfds.features.Text(),
                }
            ),
            homepage="https://www.cityscapes-dataset.com/",
        )

    def _split_generators(self, dl_manager):
        manual = str(dl_manager.manual_dir)
        archives.require_inputs(manual, missing_test_inputs(manual), TEST_INSTRUCTIONS)
        images = archives.FileTree(*archives.locate(manual, IMAGES_ARCHIVE, IMAGES_FOLDER))
        return {"test": self._generate_examples(images, _frames(images, ("test",))["test"])}

    def _generate_examples(self, images, rels):
        for rel in rels:
            stem = rel.split("/")[2][: -len("_leftImg8bit.png")]
            data = images.read(rel)
            check_image(data, images.describe(rel))
            yield stem, {"image": io.BytesIO(data), "id": stem}
