"""Files written whole or not at all: one helper for every writer in jaxseg (predictions, run
records, metric logs, surrogates). Imports only the standard library, so that the losses may use
it (like :mod:`jaxseg._validation`)."""

from __future__ import annotations

import glob
import json
import os
import re
import uuid
from typing import Any, BinaryIO, Callable


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Calls ``write(file)`` on a hidden temporary file next to ``path`` (``.<name>.<pid>.<random>.tmp``,
    which matches no ``*.png`` pattern) and renames it to ``path`` (``os.replace``, atomic on one
    file system); on any error or interruption the temporary file is removed and ``path`` is left
    as it was. Creates the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# The temporary name of atomic_write: ``.<name>.<pid>.<12 hex digits>.tmp``.
TEMPORARY_NAME = re.compile(r"^\..+\.\d+\.[0-9a-f]{12}\.tmp$")


def is_temporary(path: str) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_write` (left by a killed process)."""
    return bool(TEMPORARY_NAME.match(os.path.basename(path)))


def remove_temporaries(folder: str) -> None:
    """Removes the temporary files of :func:`atomic_write` in ``folder`` (not below it): what a
    killed writer left. Call it only where no other process writes into ``folder``."""
    for path in glob.glob(os.path.join(glob.escape(folder), ".*.tmp")):
        if is_temporary(path):
            os.remove(path)


def write_json(path: str, obj: Any) -> None:
    """``obj`` as indented JSON (keys sorted, unknown types as ``str``), written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    atomic_write(path, lambda f: f.write(text.encode()))
