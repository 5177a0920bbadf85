"""Writers of tiny datasets in the official on-disk layouts (for tests and benchmarks).

They produce exactly what the real builders read: the VOC 2012 ``VOCdevkit`` tree (as a folder or
``VOCtrainval_11-May-2012.tar``), the VOC 2012 test images (``VOC2012test.tar``, or the same tree
extracted), SBD's ``benchmark_RELEASE/dataset`` (as a folder or ``benchmark.tgz``, with
``cls/<id>.mat`` holding the ``GTcls`` struct written by ``scipy.io.savemat``) and the Cityscapes
``leftImg8bit_trainvaltest.zip`` / ``gtFine_trainvaltest.zip`` with the official file names
(a ``test`` split too, whose labels, as the official ones, mean nothing). Contents are random but deterministic
(``numpy.random.default_rng(seed)``); the functions return the ground truth they wrote so that
tests can compare the builders' output with it.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
from PIL import Image

from jaxseg.data import cityscapes as cs
from jaxseg.data import voc


def encode_png(arr: np.ndarray, palette: bool = False) -> bytes:
    """PNG bytes of ``arr``; ``palette=True`` writes a palette PNG whose indices are ``arr`` (VOC)."""
    if palette:  # palette PNG whose pixel values are the class indices (as VOC's)
        img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr, np.uint8).tobytes())
        img.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    else:
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _random_label(rng, h, w, num_classes, void: bool) -> np.ndarray:
    """Blocky label map: background plus a few rectangles of random classes (and a void rim)."""
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        c = int(rng.integers(1, num_classes))
        y0, x0 = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        y1, x1 = int(rng.integers(y0 + 2, h + 1)), int(rng.integers(x0 + 2, w + 1))
        label[y0:y1, x0:x1] = c
        if void:
            label[y0, x0:x1] = 255
    return label


def _write_members(dest: str, members: dict[str, bytes], fmt: str) -> None:
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    if fmt == "dir":
        for rel, data in members.items():
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    elif fmt == "zip":
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
            for rel, data in members.items():
                z.writestr(rel, data)
    else:
        mode = "w:gz" if fmt == "tgz" else "w"
        with tarfile.open(dest, mode) as t:
            for rel, data in members.items():
                info = tarfile.TarInfo(rel)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))


def write_voc_sbd(
    manual_dir: str,
    *,
    voc_train: list[str],
    voc_val: list[str],
    sbd_train: list[str],
    sbd_val: list[str],
    size: tuple[int, int] | list[tuple[int, int]] = (24, 32),
    archive: bool = True,
    seed: int = 0,
    image_fn=None,
) -> dict[str, dict[str, np.ndarray]]:
    """Writes VOC 2012 (+ SBD) in ``manual_dir``; returns ``{"voc": {id: label}, "sbd": {id: label}}``.

    Every id in any list gets a JPEG in ``JPEGImages``; VOC train/val ids get a palette PNG in
    ``SegmentationClass`` (with void rims); SBD ids get ``cls/<id>.mat``. ``size`` is one (H, W)
    or a list cycled over the ids. ``archive`` picks the official ``.tar``/``.tgz`` over folders.
    ``image_fn(rng, h, w) -> uint8 [h, w, 3]`` overrides the random image content.
    """
    import scipy.io

    rng = np.random.default_rng(seed)
    sizes = [size] if isinstance(size, tuple) else list(size)
    all_ids = list(dict.fromkeys(voc_train + voc_val + sbd_train + sbd_val))
    vroot, sroot = voc.VOC_FOLDER, voc.SBD_FOLDER
    vm: dict[str, bytes] = {}
    sm: dict[str, bytes] = {}
    truth = {"voc": {}, "sbd": {}}
    for n, i in enumerate(all_ids):
        h, w = sizes[n % len(sizes)]
        img = image_fn(rng, h, w) if image_fn else rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        vm[f"{vroot}/JPEGImages/{i}.jpg"] = _jpeg(img)
        if i in voc_train or i in voc_val:
            lab = _random_label(rng, h, w, voc.NUM_CLASSES, void=True)
            vm[f"{vroot}/SegmentationClass/{i}.png"] = encode_png(lab, palette=True)
            truth["voc"][i] = lab
        if i in sbd_train or i in sbd_val:
            lab = _random_label(rng, h, w, voc.NUM_CLASSES, void=False)
            buf = io.BytesIO()
            scipy.io.savemat(
                buf,
                {"GTcls": {"Segmentation": lab, "Boundaries": np.zeros((1, 1)), "CategoriesPresent": np.unique(lab)}},
            )
            sm[f"{sroot}/cls/{i}.mat"] = buf.getvalue()
            truth["sbd"][i] = lab
    vm[f"{vroot}/ImageSets/Segmentation/train.txt"] = ("\n".join(voc_train) + "\n").encode()
    vm[f"{vroot}/ImageSets/Segmentation/val.txt"] = ("\n".join(voc_val) + "\n").encode()
    vm[f"{vroot}/ImageSets/Segmentation/trainval.txt"] = ("\n".join(voc_train + voc_val) + "\n").encode()
    sm[f"{sroot}/train.txt"] = ("\n".join(sbd_train) + "\n").encode()
    sm[f"{sroot}/val.txt"] = ("\n".join(sbd_val) + "\n").encode()
    if archive:
        _write_members(os.path.join(manual_dir, voc.VOC_ARCHIVE), vm, "tar")
        _write_members(os.path.join(manual_dir, voc.SBD_ARCHIVE), sm, "tgz")
    else:
        _write_members(manual_dir, vm, "dir")
        _write_members(manual_dir, sm, "dir")
    return truth


def write_voc_test(
    manual_dir: str,
    *,
    ids: list[str],
    size: tuple[int, int] | list[tuple[int, int]] = (24, 32),
    archive: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Writes the VOC 2012 test images as ``VOC2012test.tar`` (or, ``archive=False``, extracted
    into ``manual_dir/VOCdevkit/VOC2012/``): ``JPEGImages/<id>.jpg`` and
    ``ImageSets/Segmentation/test.txt``. ``size`` is one (H, W) or a list cycled over the ids.
    Returns ``{id: the JPEG bytes}`` (what the builder stores unchanged)."""
    rng = np.random.default_rng(seed)
    sizes = [size] if isinstance(size, tuple) else list(size)
    root = voc.VOC_FOLDER
    members: dict[str, bytes] = {}
    images = {}
    for n, i in enumerate(ids):
        h, w = sizes[n % len(sizes)]
        images[i] = members[f"{root}/JPEGImages/{i}.jpg"] = _jpeg(
            rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    members[f"{root}/{voc.TEST_LIST}"] = ("\n".join(ids) + "\n").encode()
    members[f"{root}/ImageSets/Main/test.txt"] = ("\n".join(ids) + "\n").encode()
    if archive:
        _write_members(os.path.join(manual_dir, voc.VOC_TEST_ARCHIVE), members, "tar")
    else:
        _write_members(manual_dir, members, "dir")
    return images


def write_cityscapes(
    manual_dir: str,
    *,
    frames: dict[str, list[str]],
    size: tuple[int, int] = (16, 32),
    archive: bool = True,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Writes Cityscapes with the official names; ``frames`` maps split -> ``city_seq_frame`` stems.

    Returns ``{stem: {"label_ids": uint8 [H, W], "instance": int32 [H, W], "image": uint8
    [H, W, 3]}}``. Label maps use random labelIds from the official table (void ones included);
    instance maps give every rectangle of a class with instances its own id
    ``labelId * 1000 + k``. Any split name is written (``test`` too, labelled as the others).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    im: dict[str, bytes] = {}
    gm: dict[str, bytes] = {}
    truth = {}
    label_ids = [lid for _, lid, _, _, _ in cs.LABELS]
    for split, stems in frames.items():
        for stem in stems:
            city = stem.split("_")[0]
            lab = rng.choice(label_ids, size=(h, w)).astype(np.uint8)
            inst = lab.astype(np.int32).copy()
            k = 0
            for _ in range(3):
                lid = int(rng.integers(24, 34))  # person .. bicycle
                y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
                lab[y0:y0 + 3, x0:x0 + 3] = lid
                inst[y0:y0 + 3, x0:x0 + 3] = lid * 1000 + k
                k += 1
            img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            im[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = encode_png(img)
            gm[f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"] = encode_png(lab)
            gm[f"gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png"] = encode_png(inst.astype(np.uint16))
            gm[f"gtFine/{split}/{city}/{stem}_gtFine_color.png"] = encode_png(img)
            truth[stem] = {"label_ids": lab, "instance": inst, "image": img}
    im["README"] = b"Cityscapes test fixture\n"
    if archive:
        _write_members(os.path.join(manual_dir, cs.IMAGES_ARCHIVE), im, "zip")
        _write_members(os.path.join(manual_dir, cs.LABELS_ARCHIVE), gm, "zip")
    else:
        _write_members(manual_dir, {k: v for k, v in im.items() if k != "README"}, "dir")
        _write_members(manual_dir, gm, "dir")
    return truth
