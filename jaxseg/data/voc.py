"""Pascal VOC 2012 segmentation with the SBD extra annotations, as a TFDS builder.

Reads, from the TFDS manual directory, the official archives (or their extracted folders):

* ``VOCtrainval_11-May-2012.tar`` (or ``VOCdevkit/VOC2012/``): ``JPEGImages/<id>.jpg``,
  ``SegmentationClass/<id>.png`` (palette PNG, indices 0-20, 255 = void boundary),
  ``ImageSets/Segmentation/{train,val}.txt``.
* SBD's ``benchmark.tgz`` (or ``benchmark_RELEASE/dataset/``): ``cls/<id>.mat`` holding the struct
  ``GTcls`` with ``Segmentation`` (uint8, 0-20, no void) and ``{train,val}.txt``.

Splits: ``train`` (1464), ``val`` (1449) and ``train_aug`` (10582 = VOC train ∪ SBD train ∪ SBD val
minus VOC val, the "SegmentationClassAug" set of DeepLab). For ids of ``train_aug`` that have a VOC
annotation the VOC label is used (it has the void boundaries); the others use SBD's label. Images
are always VOC's JPEGs (every SBD image is a VOC 2011 trainval image, hence in VOC 2012), stored
byte for byte after a decode check.

The image-only ``test`` split (1456 images, no public labels) is a builder of its own,
:class:`Voc2012SegmentationTest`, prepared on first use from the test archive
``VOC2012test.tar`` (``VOCdevkit/VOC2012/JPEGImages`` and
``ImageSets/Segmentation/test.txt``; or those extracted, e.g. next to trainval in the same
``VOCdevkit/VOC2012/``), so that training needs no test archive.

Every file is checked while the dataset is prepared, before any training step: a corrupt image or
annotation, a label value outside the classes, an image whose size differs from its label's, a
missing annotation raise an error naming the file(s) (:class:`~jaxseg.data.archives.DataError`,
``FileNotFoundError``).
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg.data import archives

VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
VOC_FOLDER = "VOCdevkit/VOC2012"
SBD_ARCHIVE = "benchmark.tgz"
SBD_FOLDER = "benchmark_RELEASE/dataset"

CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NUM_CLASSES = len(CLASS_NAMES)
VOC_TEST_ARCHIVE = "VOC2012test.tar"
TEST_LIST = "ImageSets/Segmentation/test.txt"
SPLIT_SIZES = {"train": 1464, "val": 1449, "train_aug": 10582, "test": 1456}

MANUAL_INSTRUCTIONS = f"""\
Place in the manual directory the official Pascal VOC 2012 archive `{VOC_ARCHIVE}`
(or its extracted `{VOC_FOLDER}/` folder) and the SBD archive `{SBD_ARCHIVE}`
(or its extracted `{SBD_FOLDER}/` folder).
"""


TEST_INSTRUCTIONS = f"""\
For the test split, place in the manual directory the official Pascal VOC 2012 test archive
`{VOC_TEST_ARCHIVE}` (or its extracted `{VOC_FOLDER}/` folder, with `{TEST_LIST}`).
"""


def missing_inputs(manual_dir: str | None) -> list[str]:
    """Names of the expected archives that are absent from ``manual_dir`` (empty when complete)."""
    return archives.missing(manual_dir, ((VOC_ARCHIVE, VOC_FOLDER), (SBD_ARCHIVE, SBD_FOLDER)))


def locate_test(manual_dir: str | None) -> tuple[str, str] | None:
    """``(path, root)`` of the test images: ``VOC2012test.tar``, else an extracted
    ``VOCdevkit/VOC2012/`` that holds the test list (the trainval folder alone does not)."""
    if manual_dir and os.path.isfile(os.path.join(manual_dir, VOC_TEST_ARCHIVE)):
        return os.path.join(manual_dir, VOC_TEST_ARCHIVE), VOC_FOLDER
    if manual_dir and os.path.isfile(os.path.join(manual_dir, VOC_FOLDER, TEST_LIST)):
        return manual_dir, VOC_FOLDER
    return None


def missing_test_inputs(manual_dir: str | None) -> list[str]:
    """``[]`` when :func:`locate_test` finds the test images, else the expected archive."""
    if locate_test(manual_dir) is not None:
        return []
    return [f"{VOC_TEST_ARCHIVE} (or the folder {VOC_FOLDER}/ with {TEST_LIST})"]


def _read_ids(tree: archives.FileTree, rel: str) -> list[str]:
    text = tree.read(rel).decode("utf-8")
    return [line.strip().split()[0] for line in text.splitlines() if line.strip()]


def check_label(label: np.ndarray, where: str, num_classes: int = NUM_CLASSES, allow_void: bool = True) -> None:
    """Raises :class:`~jaxseg.data.archives.DataError` naming ``where`` and the value if a label
    is outside 0..C-1 (and 255)."""
    values = np.unique(label)
    valid = values < num_classes
    if allow_void:
        valid |= values == 255
    if not valid.all():
        bad = values[~valid]
        raise archives.DataError(
            f"{where}: label value {int(bad[0])} is outside the classes 0..{num_classes - 1}"
            + (" and 255 (void)" if allow_void else "")
            + f" (bad values: {bad.tolist()[:10]})"
        )


def decode_voc_label(data: bytes, where: str) -> np.ndarray:
    """Palette-PNG class indices [H, W] uint8, checked to be in 0..20 or 255."""
    img = archives.decode_image(data, where, what="label image")
    if img.mode not in ("P", "L"):
        raise archives.DataError(f"{where}: expected a palette (mode 'P') PNG of class indices, got mode {img.mode!r}")
    label = np.asarray(img, dtype=np.uint8)
    check_label(label, where)
    return label


def decode_sbd_label(data: bytes, where: str) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file, [H, W] uint8 checked to be in 0..20."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat["GTcls"].Segmentation)
    except Exception as e:
        raise archives.DataError(f"Corrupt SBD annotation {where}: {e}") from e
    if seg.ndim != 2:
        raise archives.DataError(f"{where}: GTcls.Segmentation must be 2-D, got shape {seg.shape}")
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise archives.DataError(
            f"{where}: label value {int(seg.min() if seg.min() < 0 else seg.max())} is outside 0..20")
    seg = seg.astype(np.uint8)
    check_label(seg, where, allow_void=True)
    return seg


def check_image(data: bytes, where: str, expected_hw: tuple[int, int] | None = None,
                label_where: str | None = None) -> tuple[int, int]:
    """Decodes an image fully (PIL) and returns (H, W).

    :class:`~jaxseg.data.archives.DataError` naming the file when it is corrupt or not RGB (or
    grey), and naming the image and its label file (``label_where``) when its size differs from
    ``expected_hw``, the label's size.
    """
    img = archives.decode_image(data, where)
    if img.mode not in ("RGB", "L"):
        raise archives.DataError(f"{where}: expected an RGB image, got mode {img.mode!r}")
    hw = (img.height, img.width)
    if expected_hw is not None and hw != tuple(expected_hw):
        label = f" ({label_where})" if label_where else ""
        raise archives.DataError(
            f"{where}: image size {hw} differs from its label's size {tuple(expected_hw)}{label}")
    return hw


def _rgb_bytes(data: bytes) -> bytes:
    """JPEG bytes unchanged when already RGB; grey JPEGs are re-encoded as RGB (lossless PNG)."""
    img = Image.open(io.BytesIO(data))
    if img.mode == "RGB":
        return data
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
    """Pascal VOC 2012 segmentation + SBD (splits train, val, train_aug)."""

    name = "jaxseg_voc2012_segmentation"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "VOC 2012 train/val and train_aug with SBD labels."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Pascal VOC 2012 semantic segmentation with the SBD augmented training set.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                    "id": tfds.features.Text(),
                }
            ),
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        )

    def _split_generators(self, dl_manager):
        manual = str(dl_manager.manual_dir)
        archives.require_inputs(manual, missing_inputs(manual), MANUAL_INSTRUCTIONS)
        voc = archives.FileTree(*archives.locate(manual, VOC_ARCHIVE, VOC_FOLDER))
        sbd = archives.FileTree(
            *archives.locate(manual, SBD_ARCHIVE, SBD_FOLDER),
            keep=lambda rel: rel.startswith("cls/") or rel in ("train.txt", "val.txt"),
        )
        voc_train = _read_ids(voc, "ImageSets/Segmentation/train.txt")
        voc_val = _read_ids(voc, "ImageSets/Segmentation/val.txt")
        sbd_ids = _read_ids(sbd, "train.txt") + _read_ids(sbd, "val.txt")
        val_set = set(voc_val)
        aug, seen = [], set()
        for i in voc_train + sbd_ids:
            if i not in val_set and i not in seen:
                seen.add(i)
                aug.append(i)
        voc_labelled = set(voc_train) | val_set
        return {
            "train": self._generate_examples(voc, sbd, voc_train, voc_labelled),
            "val": self._generate_examples(voc, sbd, voc_val, voc_labelled),
            "train_aug": self._generate_examples(voc, sbd, aug, voc_labelled),
        }

    def _generate_examples(self, voc, sbd, ids, voc_labelled):
        for i in ids:
            if i in voc_labelled and voc.exists(f"SegmentationClass/{i}.png"):
                tree, rel = voc, f"SegmentationClass/{i}.png"
                label = decode_voc_label(voc.read(rel), voc.describe(rel))
            else:
                tree, rel = sbd, f"cls/{i}.mat"
                if not sbd.exists(rel):
                    raise FileNotFoundError(
                        f"No annotation for image {i!r}: expected {voc.describe(f'SegmentationClass/{i}.png')} "
                        f"or {sbd.describe(rel)}"
                    )
                label = decode_sbd_label(sbd.read(rel), sbd.describe(rel))
            yield i, {"image": _checked_jpeg(voc, i, label.shape, tree.describe(rel)),
                      "label": label[..., None], "id": i}


def _checked_jpeg(voc: archives.FileTree, image_id: str, label_hw=None, label_where=None) -> io.BytesIO:
    """The RGB bytes of ``JPEGImages/<image_id>.jpg``, checked (:func:`check_image`)."""
    rel = f"JPEGImages/{image_id}.jpg"
    data = voc.read(rel)
    check_image(data, voc.describe(rel), label_hw, label_where)
    return io.BytesIO(_rgb_bytes(data))


class Voc2012SegmentationTest(tfds.core.GeneratorBasedBuilder):
    """Pascal VOC 2012 segmentation test images (split ``test``, no labels), for the server."""

    name = "jaxseg_voc2012_segmentation_test"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The 1456 segmentation test images of VOC2012test.tar, image-only."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = TEST_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Pascal VOC 2012 segmentation test images (labels are not public).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "id": tfds.features.Text(),
                }
            ),
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        )

    def _split_generators(self, dl_manager):
        manual = str(dl_manager.manual_dir)
        archives.require_inputs(manual, missing_test_inputs(manual), TEST_INSTRUCTIONS)
        tree = archives.FileTree(*locate_test(manual))
        return {"test": self._generate_examples(tree, _read_ids(tree, TEST_LIST))}

    def _generate_examples(self, tree, ids):
        for i in ids:
            yield i, {"image": _checked_jpeg(tree, i), "id": i}
