"""Uniform read access to a dataset's files: an extracted folder, a tar, a .tgz or a .zip.

The official archives are read in place (no extraction): an uncompressed tar or a zip gives random
access; a gzip-compressed tar (SBD's ``benchmark.tgz``) is read once, sequentially, keeping only the
members a ``keep`` predicate selects.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import zipfile
from typing import Callable, Iterable

from PIL import Image


class DataError(ValueError):
    """A dataset or input file that cannot be used: corrupt, holding a value outside the label
    set, or of a size that differs from its pair. The message names the file (a missing file is a
    ``FileNotFoundError``)."""


class FileTree:
    """Files under ``root`` (a relative prefix) inside ``path`` (a folder or an archive).

    ``read(rel)`` returns the bytes of ``root/rel``; ``names()`` lists the relative names;
    ``describe(rel)`` is the human-readable location used in error messages
    (``/manual/VOCtrainval_11-May-2012.tar:VOCdevkit/VOC2012/JPEGImages/x.jpg``).
    """

    def __init__(self, path: str, root: str = "", keep: Callable[[str], bool] | None = None):
        self.path = os.fspath(path)
        self.root = root.strip("/")
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] | None = None
        self._members: dict[str, object] | None = None
        self._handle = None
        prefix = self.root + "/" if self.root else ""
        if os.path.isdir(self.path):
            self.kind = "dir"
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
            self._handle = zipfile.ZipFile(self.path)
            self._members = {
                n[len(prefix):]: n for n in self._handle.namelist() if n.startswith(prefix) and not n.endswith("/")
            }
        elif self.path.endswith((".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")):
            self.kind = "stream"
            self._cache = {}
            try:
                with tarfile.open(self.path, "r:*") as tf:
                    for m in tf:
                        if not m.isfile() or not m.name.startswith(prefix):
                            continue
                        rel = m.name[len(prefix):]
                        if keep is None or keep(rel):
                            self._cache[rel] = tf.extractfile(m).read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DataError(f"Cannot read archive {self.path}: {e}") from e
        else:
            try:
                self._handle = tarfile.open(self.path, "r:")
                self.kind = "tar"
                self._members = {
                    m.name[len(prefix):]: m
                    for m in self._handle.getmembers()
                    if m.isfile() and m.name.startswith(prefix)
                }
            except (tarfile.TarError, OSError) as e:
                raise DataError(f"Cannot read archive {self.path}: {e}") from e

    def describe(self, rel: str) -> str:
        full = f"{self.root}/{rel}" if self.root else rel
        if self.kind == "dir":
            return os.path.join(self.path, full)
        return f"{self.path}:{full}"

    def names(self) -> Iterable[str]:
        if self.kind == "dir":
            base = os.path.join(self.path, self.root)
            for dirpath, _, files in os.walk(base):
                for f in files:
                    yield os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")
        elif self.kind == "stream":
            yield from self._cache
        else:
            yield from self._members

    def exists(self, rel: str) -> bool:
        if self.kind == "dir":
            return os.path.isfile(os.path.join(self.path, self.root, rel))
        if self.kind == "stream":
            return rel in self._cache
        return rel in self._members

    def read(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise FileNotFoundError(f"Missing file {self.describe(rel)}")
        if self.kind == "dir":
            with open(os.path.join(self.path, self.root, rel), "rb") as f:
                return f.read()
        if self.kind == "stream":
            return self._cache[rel]
        with self._lock:
            if self.kind == "zip":
                return self._handle.read(self._members[rel])
            return self._handle.extractfile(self._members[rel]).read()

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def locate(manual_dir: str, archive: str, folder: str) -> tuple[str, str] | None:
    """Finds ``archive`` (a file) or ``folder`` (an extracted directory) in ``manual_dir``.

    Returns ``(path, root)`` for :class:`FileTree` (the archive with ``folder`` as its internal
    root, or ``manual_dir`` with ``folder`` as root), or None when neither exists.
    """
    if manual_dir and os.path.isdir(os.path.join(manual_dir, folder)):
        return manual_dir, folder
    if manual_dir and os.path.isfile(os.path.join(manual_dir, archive)):
        return os.path.join(manual_dir, archive), folder
    return None


def missing(manual_dir: str | None, inputs: Iterable[tuple[str, str]]) -> list[str]:
    """Names of the ``(archive, folder)`` inputs that :func:`locate` finds in neither form."""
    return [f"{archive} (or the folder {folder}/)" for archive, folder in inputs
            if locate(manual_dir, archive, folder) is None]


def require_inputs(manual_dir: str, missing_names: list[str], instructions: str) -> None:
    """FileNotFoundError listing ``missing_names`` and the builder's instructions, if any."""
    if missing_names:
        raise FileNotFoundError(
            f"Missing {', '.join(missing_names)} in the manual directory {manual_dir}.\n{instructions}"
        )


def decode_image(data: bytes, where: str, what: str = "image") -> Image.Image:
    """Fully decoded PIL image of the file bytes ``data``.

    :class:`DataError` ``Corrupt <what> <where>: ...`` when PIL cannot decode it (PIL raises
    several exception types on corrupt files).
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:
        raise DataError(f"Corrupt {what} {where}: {e}") from e
    return img
