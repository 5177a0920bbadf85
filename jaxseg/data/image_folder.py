"""A folder of the user's own images as prediction batches of static shapes (size buckets).

Images of any size are batched by *size bucket*: each image is padded (bottom/right, with 0 after
normalisation, as the evaluation pads) to its bucket, its height and its width each rounded up to
the next value of :data:`BUCKET_SIDES` (64, 96, 128, 192, 256, ...: the powers of two and 1.5
times them), and a global batch holds images of one bucket only, the last batch of a bucket
completed with filler examples (``example_mask`` False). A jitted prediction compiles once per
bucket shape: at most ``len(sides) ** 2`` shapes whatever the number of distinct image sizes, a
handful in practice (a folder of 500 x 375 and 375 x 500 photos: two), and every padded side is
less than 1.5 times the image's (every bucket side is a multiple of 32, which strided models need).

The order is fixed by the file names (:func:`plan_image_folder`: buckets by area, files sorted
within a bucket), so every host computes the same plan from a shared folder; host ``p`` of ``P``
takes rows ``p*b .. p*b + b - 1`` of each global batch (``b = B / P``), as the evaluation iterator
does. Images are decoded with PIL in a thread pool (EXIF orientation applied, as image viewers
show them; grey, palette and RGBA images converted to RGB); a file PIL cannot read raises a
:class:`~jaxseg.data.archives.DataError` naming it, its header while the plan is made (before any
step), its pixels when its batch is read.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from jaxseg.data.archives import DataError
from jaxseg.data.pipeline import _hosts

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
BUCKET_SIDES: tuple[int, ...] = (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
                                 4096, 6144, 8192)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap height and width


def bucket_size(height: int, width: int, sides: Sequence[int] = BUCKET_SIDES) -> tuple[int, int]:
    """The padded ``(H, W)`` of an image: each side rounded up to the next of ``sides`` (beyond
    the largest, to a multiple of it)."""
    sides = sorted(int(s) for s in sides)

    def up(v: int) -> int:
        for s in sides:
            if v <= s:
                return s
        return -(-v // sides[-1]) * sides[-1]

    return up(int(height)), up(int(width))


@dataclasses.dataclass(frozen=True)
class FolderPlan:
    """What :func:`create_folder_iterator` reads, in which batches.

    ``files``: paths relative to ``root`` (``/``-separated); ``names``: the same without their
    extension (what a prediction is written under); ``sizes``: ``(height, width)`` as displayed
    (EXIF orientation applied); ``batches``: ``(padded (H, W), file indices of the global batch,
    -1 for filler)`` in iteration order.
    """

    root: str
    files: tuple[str, ...]
    names: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]
    batches: tuple[tuple[tuple[int, int], tuple[int, ...]], ...]

    @property
    def num_examples(self) -> int:
        return len(self.files)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The distinct padded shapes (one compilation each), in iteration order."""
        return list(dict.fromkeys(shape for shape, _ in self.batches))

    def batch_count(self, k: int) -> int:
        """Number of real (non-filler) examples in global batch ``k``."""
        return sum(i >= 0 for i in self.batches[k][1])


def _open(path: str) -> Image.Image:
    try:
        return Image.open(path)
    except Exception as e:  # PIL raises several types on unreadable files
        raise DataError(f"Cannot read the image {path}: {e}") from e


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image file as displayed (EXIF orientation applied), from its
    header; :class:`DataError` naming the file when PIL cannot read it."""
    with _open(path) as img:
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # a broken EXIF block: the image is shown as stored
            orientation = 1
        w, h = img.size
    return (w, h) if orientation in _TRANSPOSED else (h, w)


def load_image(path: str) -> np.ndarray:
    """``uint8 [H, W, 3]`` pixels of an image file (EXIF orientation applied, converted to RGB);
    :class:`DataError` naming the file when it cannot be decoded."""
    with _open(path) as img:
        try:
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = img.convert("RGBA").convert("RGB") if "transparency" in img.info else img.convert("RGB")
            return np.asarray(img, np.uint8)
        except Exception as e:
            raise DataError(f"Cannot decode the image {path}: {e}") from e


def list_images(input_dir: str, exclude: Sequence[str] = ()) -> list[str]:
    """Relative paths of the image files under ``input_dir`` (recursive, sorted; hidden files and
    folders and the folders ``exclude``, e.g. an output folder inside it, skipped)."""
    root = os.path.abspath(input_dir)
    skip = {os.path.abspath(e) for e in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and os.path.join(dirpath, d) not in skip)
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(found)


def plan_image_folder(input_dir: str, global_batch_size: int, *,
                      sides: Sequence[int] = BUCKET_SIDES, exclude: Sequence[str] = ()) -> FolderPlan:
    """The :class:`FolderPlan` of the images under ``input_dir`` (see the module docstring).

    Raises FileNotFoundError when the folder is missing or holds no image, :class:`DataError`
    when two files would be written under one name (``a.jpg`` and ``a.png``) or a header cannot
    be read.
    """
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"The input folder {input_dir} does not exist.")
    files = list_images(input_dir, exclude)
    if not files:
        raise FileNotFoundError(f"No image ({', '.join(IMAGE_EXTENSIONS)}) in the folder {input_dir}.")
    names = [os.path.splitext(f)[0] for f in files]
    by_name = collections.defaultdict(list)
    for f, n in zip(files, names):
        by_name[n].append(f)
    clashes = [fs for fs in by_name.values() if len(fs) > 1]
    if clashes:
        raise DataError(f"The images {', '.join(clashes[0])} in {input_dir} would be written under one "
                        f"name: rename one of them ({len(clashes)} such group(s)).")
    sizes = [image_size(os.path.join(input_dir, f)) for f in files]
    groups: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for i, (h, w) in enumerate(sizes):
        groups[bucket_size(h, w, sides)].append(i)
    B = int(global_batch_size)
    batches = []
    for shape in sorted(groups, key=lambda s: (s[0] * s[1], s)):
        members = groups[shape]
        for start in range(0, len(members), B):
            chunk = members[start:start + B]
            batches.append((shape, tuple(chunk) + (-1,) * (B - len(chunk))))
    return FolderPlan(os.path.abspath(input_dir), tuple(files), tuple(names), tuple(sizes), tuple(batches))


def create_folder_iterator(
    *,
    input_dir: str,
    global_batch_size: int,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    sides: Sequence[int] = BUCKET_SIDES,
    exclude: Sequence[str] = (),
    plan: FolderPlan | None = None,
    num_threads: int = 4,
    prefetch: int = 2,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over a folder of images: this host's part of each global batch.

    Arguments: ``input_dir``, ``global_batch_size``, ``mean`` / ``std`` (normalisation, as the
    evaluation's), ``sides`` / ``exclude`` (:func:`plan_image_folder`; or a ready ``plan``),
    ``num_threads`` decoding threads, ``prefetch`` batches decoded ahead, ``process_index`` /
    ``process_count`` (default ``jax.process_index()`` / ``jax.process_count()``).

    Yields ``{"image": float32 [b, H, W, 3] (normalised; 0 in the padding), "size": int32 [b, 2]
    (height, width), "id": bytes [b] (the file's path relative to ``input_dir`` without its
    extension, ``b""`` for filler), "example_mask": bool [b]}``, ``(H, W)`` the batch's bucket.
    """
    p, _, b = _hosts(global_batch_size, process_index, process_count)
    plan = plan or plan_image_folder(input_dir, global_batch_size, sides=sides, exclude=exclude)
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)

    def load(i: int) -> np.ndarray:
        path = os.path.join(plan.root, plan.files[i])
        pixels = load_image(path)
        if pixels.shape[:2] != plan.sizes[i]:
            raise DataError(f"The image {path} changed size while it was read "
                            f"({plan.sizes[i]} -> {pixels.shape[:2]}).")
        return (pixels.astype(np.float32) - mean) / std

    def assemble(shape, rows, futures) -> dict[str, np.ndarray]:
        image = np.zeros((b,) + shape + (3,), np.float32)
        size = np.zeros((b, 2), np.int32)
        ids = np.array([b""] * b, dtype=object)
        for j, (i, future) in enumerate(zip(rows, futures)):
            if i < 0:
                continue
            h, w = plan.sizes[i]
            image[j, :h, :w] = future.result()
            size[j] = (h, w)
            ids[j] = plan.names[i].encode()
        return {"image": image, "size": size, "id": ids, "example_mask": np.asarray(rows) >= 0}

    def batches():
        pool = ThreadPoolExecutor(max(int(num_threads), 1), thread_name_prefix="jaxseg-images")
        pending = collections.deque()
        try:
            for k, (shape, indices) in enumerate(plan.batches):
                rows = indices[p * b:(p + 1) * b]
                pending.append((shape, rows, [pool.submit(load, i) if i >= 0 else None for i in rows]))
                if len(pending) > max(int(prefetch), 0):
                    yield assemble(*pending.popleft())
            while pending:
                yield assemble(*pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return batches()
