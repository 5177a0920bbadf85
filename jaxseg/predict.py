"""Predictions as files: the formats the official tools read, written whole or not at all, and the
jitted prediction step they come from.

Formats (:class:`Layout`, folders relative to the output folder):

* **Cityscapes** (:func:`cityscapes_layout`): ``labelIds/<city>_<seq>_<frame>.png``, 8-bit PNGs of
  *labelIds* (train ids mapped back with the official table, e.g.
  ``jaxseg.data.cityscapes.TRAIN_ID_TO_LABEL_ID``) at the frame's size, as cityscapesScripts'
  ``evalPixelLevelSemanticLabeling`` reads them (it finds a frame's prediction as
  ``<city>_<seq>_<frame>*.png`` under ``CITYSCAPES_RESULTS``) and as the benchmark server takes
  them (a zip of the folder).
* **Pascal VOC** (:func:`voc_layout`): ``results/VOC2012/Segmentation/comp6_<split>_cls/<id>.png``,
  indexed (mode ``"P"``) PNGs of the class indices with the VOC palette (:func:`voc_palette`), the
  devkit's layout; for the test split also ``results.tgz`` of that tree, what the evaluation server
  takes (:func:`write_archive`).
* **Any dataset** (:func:`indexed_layout`): ``predictions/<name>.png``, indexed PNGs of class ids
  with the VOC palette; and, on request for every format, colour overlays
  (``overlays/<name>.png``) and class probabilities (``probabilities/<name>.npz``: float16
  ``probabilities`` [H, W, C] and ``class_names``; float32 would be 160 MB for a Cityscapes
  frame).

Importing this module loads JAX and jaxseg's evaluation only (no TensorFlow, no trainer); writing
PNGs needs Pillow (the ``data`` or ``train`` extra), overlays matplotlib (``train``).

Every file is written to a hidden temporary name in its folder and renamed over its final name
(:func:`atomic_write`, ``os.replace``): a file appears complete or not at all, also when a run is
stopped. :class:`PredictionWriter` writes in a thread pool while the device predicts.

:func:`make_predict_step` is the evaluation's prediction (:func:`jaxseg.evaluate.predict_probabilities`,
multi-scale, flip, whole or sliding-window) under ``jax.jit`` with the batch sharded on the ``'data'`` mesh axis, in and
out, so that each process gets back its own rows (:func:`host_rows`); it compiles once per batch
shape and counts its compilations.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxseg import evaluate as eval_lib
from jaxseg._files import atomic_write  # noqa: F401  (public here: the writers' helper)
from jaxseg import sharding

PREDICTIONS_FOLDER = "predictions"
CITYSCAPES_FOLDER = "labelIds"
OVERLAYS_FOLDER = "overlays"
PROBABILITIES_FOLDER = "probabilities"
VOC_ARCHIVE = "results.tgz"


def voc_palette() -> np.ndarray:
    """``uint8 [256, 3]``: the PASCAL VOC colour map (the devkit's ``VOClabelcolormap``: bit ``j``
    of red, green and blue of class ``c`` is bit ``3 (7 - j)``, ``+1``, ``+2`` of ``c``); index
    255 (void) is (224, 224, 192)."""
    c = np.arange(256)
    out = np.zeros((256, 3), np.int64)
    for j in range(8):
        for channel in range(3):
            out[:, channel] |= ((c >> (3 * j + channel)) & 1) << (7 - j)
    return out.astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How and where predictions are written under an output folder.

    ``kind``: ``"cityscapes"``, ``"voc"`` or ``"indexed"``; ``folder``: the prediction PNGs'
    folder; ``value_map``: ``uint8 [256]`` class id -> written value (Cityscapes labelIds) or
    None; ``palette``: ``uint8 [256, 3]`` for indexed PNGs or None (8-bit grey PNGs);
    ``archive``: the name of an archive of ``archive_root`` to write once all are written, or
    ``""``.
    """

    kind: str
    folder: str
    value_map: Optional[np.ndarray] = None
    palette: Optional[np.ndarray] = None
    archive: str = ""
    archive_root: str = ""


def cityscapes_layout(train_id_to_label_id: np.ndarray) -> Layout:
    """Cityscapes' labelIds PNGs in ``labelIds/`` (``train_id_to_label_id``: ``uint8 [256]``)."""
    table = np.asarray(train_id_to_label_id, np.uint8)
    if table.shape != (256,):
        raise ValueError(f"train_id_to_label_id must be a uint8 [256] table, got shape {table.shape}.")
    return Layout("cityscapes", CITYSCAPES_FOLDER, value_map=table)


def voc_layout(split: str) -> Layout:
    """The VOC devkit's ``results/VOC2012/Segmentation/comp6_<split>_cls/`` (comp6: trained on any
    data), indexed PNGs; the test split also gets ``results.tgz`` for the server."""
    return Layout("voc", f"results/VOC2012/Segmentation/comp6_{split}_cls", palette=voc_palette(),
                  archive=VOC_ARCHIVE if split == "test" else "", archive_root="results")


def indexed_layout() -> Layout:
    """Indexed PNGs of class ids with the VOC palette in ``predictions/``."""
    return Layout("indexed", PREDICTIONS_FOLDER, palette=voc_palette())


# ----------------------------------------------------------------------------------------------
# Files, whole or not at all


def save_png(path: str, array: np.ndarray, palette: Optional[np.ndarray] = None) -> None:
    """An 8-bit PNG of ``uint8 [H, W]`` (indexed with ``palette`` ``[256, 3]``, else grey) or an
    RGB PNG of ``uint8 [H, W, 3]``, written atomically."""
    from jaxseg import _extras  # pylint: disable=g-import-not-at-top

    _extras.require("data", "jaxseg.predict's PNG files", "PIL")
    from PIL import Image  # pylint: disable=g-import-not-at-top

    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"save_png takes uint8 arrays, got {array.dtype}.")
    img = Image.fromarray(array)
    if palette is not None:
        if array.ndim != 2:
            raise ValueError(f"an indexed PNG needs a [H, W] array, got shape {array.shape}.")
        img.putpalette(np.asarray(palette, np.uint8).tobytes())  # mode "L" -> "P", same indices
    atomic_write(path, lambda f: img.save(f, format="PNG"))


def save_probabilities(path: str, probabilities: np.ndarray,
                       class_names: Optional[Sequence[str]] = None) -> None:
    """``probabilities`` float16 ``[H, W, C]`` (and ``class_names``) as an uncompressed ``.npz``,
    written atomically."""
    arrays = {"probabilities": np.asarray(probabilities, np.float16)}
    if class_names is not None:
        arrays["class_names"] = np.asarray(list(class_names))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_archive(output_dir: str, layout: Layout) -> Optional[str]:
    """Writes ``layout.archive`` (a gzip tar of the PNGs under ``output_dir/layout.archive_root``,
    named relative to ``output_dir``, in name order) atomically; returns its path, or None when
    the layout has no archive."""
    if not layout.archive:
        return None
    root = os.path.join(output_dir, layout.archive_root)
    members = sorted(prediction_files(output_dir, Layout(layout.kind, layout.archive_root)))
    path = os.path.join(output_dir, layout.archive)

    def write(f):
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            for rel in members:
                tar.add(os.path.join(root, rel), arcname=f"{layout.archive_root}/{rel}", recursive=False)

    atomic_write(path, write)
    return path


def prediction_files(output_dir: str, layout: Layout) -> list[str]:
    """The prediction PNGs under ``output_dir/layout.folder``, relative to it (hidden temporary
    files excluded)."""
    root = os.path.join(output_dir, layout.folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                  for f in filenames if f.endswith(".png") and not f.startswith(".")]
    return sorted(found)


def check_name(name: str) -> str:
    """``name`` if it is a relative ``/``-separated path without ``..`` (an example id or a
    file's relative path without extension); ValueError otherwise."""
    parts = name.split("/")
    if not name or "\\" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"cannot write a prediction under the name {name!r}.")
    return name


class PredictionWriter:
    """Writes predictions (and overlays, probabilities) of one :class:`Layout` under ``output_dir``.

    ``write(name, prediction, image=..., probabilities=...)`` writes at once; ``submit`` (same
    arguments) writes in a pool of ``num_threads`` threads, at most ``2 * num_threads`` pending
    (it waits for the oldest first and raises its error). :meth:`close` waits for the pending
    writes and raises the first error. ``prediction``: class ids ``[h, w]`` at the image's size;
    ``image``: ``uint8 [h, w, 3]`` for the overlay; ``probabilities``: ``[h, w, C]``.
    """

    def __init__(self, output_dir: str, layout: Layout, *, overlays: bool = False,
                 probabilities: bool = False, class_names: Optional[Sequence[str]] = None,
                 num_threads: int = 4, overlay_alpha: float = 0.5):
        self.output_dir = os.path.abspath(output_dir)
        self.layout = layout
        self.overlays = bool(overlays)
        self.probabilities = bool(probabilities)
        self.class_names = None if class_names is None else list(class_names)
        self.overlay_alpha = float(overlay_alpha)
        self.written = 0
        self._max_pending = 2 * max(int(num_threads), 1)
        self._pool = ThreadPoolExecutor(max(int(num_threads), 1), thread_name_prefix="jaxseg-write")
        self._pending: collections.deque = collections.deque()

    def path(self, name: str, what: str = "prediction") -> str:
        """The file of ``name``: ``what`` is ``prediction``, ``overlay`` or ``probabilities``."""
        folder, ext = {"prediction": (self.layout.folder, ".png"),
                       "overlay": (OVERLAYS_FOLDER, ".png"),
                       "probabilities": (PROBABILITIES_FOLDER, ".npz")}[what]
        return os.path.join(self.output_dir, folder, check_name(name) + ext)

    def write(self, name: str, prediction: np.ndarray, *, image: Optional[np.ndarray] = None,
              probabilities: Optional[np.ndarray] = None) -> None:
        prediction = np.asarray(prediction)
        if prediction.ndim != 2:
            raise ValueError(f"a prediction is [H, W] class ids, got shape {prediction.shape}.")
        if prediction.size and (prediction.min() < 0 or prediction.max() > 255):
            raise ValueError(f"class ids must be in 0..255 to be written as PNG, got "
                             f"[{prediction.min()}, {prediction.max()}].")
        ids = prediction.astype(np.uint8)
        values = ids if self.layout.value_map is None else self.layout.value_map[ids]
        save_png(self.path(name), values, self.layout.palette)
        if self.overlays:
            if image is None:
                raise ValueError("overlays need the image.")
            from jaxseg import viz  # matplotlib: only when overlays are asked for

            save_png(self.path(name, "overlay"), viz.overlay(image, ids, self.overlay_alpha))
        if self.probabilities:
            if probabilities is None:
                raise ValueError("probabilities were asked for but not given.")
            if probabilities.shape[:2] != prediction.shape:
                raise ValueError(f"probabilities {probabilities.shape} and prediction "
                                 f"{prediction.shape} sizes differ.")
            save_probabilities(self.path(name, "probabilities"), probabilities, self.class_names)
        self.written += 1

    def submit(self, name: str, prediction: np.ndarray, **kwargs) -> None:
        check_name(name)
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self.write, name, prediction, **kwargs))

    def close(self, raise_errors: bool = True) -> None:
        """Waits for the pending writes (each one complete or absent); raises the first error
        unless ``raise_errors`` is False (an error is already on its way)."""
        first = None
        while self._pending:
            try:
                self._pending.popleft().result()
            except Exception as e:  # keep waiting for the others
                first = first or e
        self._pool.shutdown(wait=True)
        if first is not None and raise_errors:
            raise first


# ----------------------------------------------------------------------------------------------
# The jitted prediction


class PredictStep:
    """``step(variables, images, sizes=None)`` -> ``{"prediction": uint8 [B, H, W] class ids
    (int32 beyond 256 classes), "probabilities": float16 [B, H, W, C] (with
    ``probabilities=True``)}``, global arrays sharded on ``'data'`` like ``images`` and ``sizes``
    (global batches, :func:`jaxseg.sharding.global_batch`; ``sizes``: the images' heights and
    widths before padding, which align the last sliding window to each image's border; None: the
    padded size).

    ``compilations`` counts the traces, one per distinct ``images`` shape.
    """

    def __init__(self, mesh: Mesh, apply_fn, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                 probabilities: bool = False, mode: str = "whole",
                 window: Sequence[int] = (512, 512), stride: Sequence[int] = (341, 341)):
        self.compilations = 0
        self.shapes: list[tuple[int, ...]] = []
        self._mesh = mesh
        probs_fn = functools.partial(eval_lib.predict_probabilities, apply_fn,
                                     scales=tuple(float(s) for s in scales), flip=bool(flip),
                                     mode=mode, window=tuple(window), stride=tuple(stride))

        def step(variables, images, sizes):
            self.compilations += 1  # Python runs at trace time only: once per new shape
            self.shapes.append(tuple(images.shape))
            probs = probs_fn(variables, images, sizes=sizes)
            ids = jnp.argmax(probs, axis=-1)
            out = {"prediction": ids.astype(jnp.uint8 if probs.shape[-1] <= 256 else jnp.int32)}
            if probabilities:
                out["probabilities"] = probs.astype(jnp.float16)
            return out

        rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
        self._jitted = jax.jit(step, in_shardings=(rep, dat, dat), out_shardings=dat)

    def __call__(self, variables, images: jax.Array,
                 sizes: Optional[jax.Array] = None) -> dict[str, jax.Array]:
        if sizes is None:
            local = np.tile(np.asarray(images.shape[1:3], np.int32),
                            (images.shape[0] // jax.process_count(), 1))
            sizes = sharding.global_batch({"size": local}, self._mesh)["size"]
        return self._jitted(variables, images, sizes)


def make_predict_step(mesh: Mesh, apply_fn, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                      probabilities: bool = False, mode: str = "whole",
                      window: Sequence[int] = (512, 512),
                      stride: Sequence[int] = (341, 341)) -> PredictStep:
    """The jitted prediction (:class:`PredictStep`) of the evaluation's settings: ``scales``,
    ``flip``, and ``mode`` (``"whole"`` or ``"slide"`` with ``window`` / ``stride``,
    :func:`jaxseg.evaluate.predict_probabilities`)."""
    return PredictStep(mesh, apply_fn, scales=scales, flip=flip, probabilities=probabilities,
                       mode=mode, window=window, stride=stride)


def host_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a global array sharded on its leading axis, in order: the inverse of
    :func:`jaxseg.sharding.global_batch` (what this process put in, it gets back)."""
    shards = {}
    for shard in x.addressable_shards:
        shards.setdefault(shard.index[0].start or 0, shard)  # replicas: one copy
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])
