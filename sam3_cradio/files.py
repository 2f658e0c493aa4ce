"""Small file helpers used across the package: image file lists in natural order and atomic writes."""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ['IMAGE_EXTS', 'natural_key', 'list_image_files', 'atomic_path', 'write_atomic', 'save_atomic',
           'check_writable']

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')

_logger = logging.getLogger(__name__)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders '2.jpg' before '10.jpg': digit runs compare as numbers, the rest case-blind."""
    return [(0, int(t), '') if t.isdigit() else (1, 0, t.lower()) for t in re.split(r'(\d+)', name) if t]


def list_image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files (:data:`IMAGE_EXTS`, any case) under ``folder``, in natural order of their relative paths.

    An empty list when there are none; callers say what they expected. A symlink to an image is listed under its
    own name; symlinked folders are not searched (so a link loop cannot hang the search), and a link to nothing
    (broken, or a loop of links) is left out with a warning.
    """
    root = Path(folder)
    found = root.rglob('*') if recursive else root.iterdir()
    files = []
    for p in found:
        if p.suffix.lower() not in IMAGE_EXTS:
            continue
        if p.is_file():
            files.append(p)
        elif p.is_symlink() and not p.exists():
            _logger.warning('skipping %s: a symlink to nothing (broken, or a loop of links)', p)
    return sorted(files, key=lambda p: natural_key(p.relative_to(root).as_posix()))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on error it is removed,
    so that readers never see a half-written file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text or bytes to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


def save_atomic(path: str | os.PathLike, save: Callable[[Path], Any]) -> None:
    """Call ``save(tmp)`` (e.g. ``lambda p: torch.save(obj, p)``) and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        save(tmp)


def check_writable(path: str | os.PathLike, what: str, folder: bool = False) -> None:
    """Refuse, before any work is done, an output ``path`` that cannot be written: a folder where a file goes (or,
    for ``folder``, a file where a folder goes), or a place this process may not write in (the folder itself when
    it exists, else its nearest existing ancestor). The one-line ValueError names ``what`` ('video', ...)."""
    path = Path(path)
    if folder and os.path.lexists(path) and not path.is_dir():
        raise ValueError(f'the {what} {path} is a file; give a folder (it is created if needed)')
    if not folder and path.is_dir():
        raise ValueError(f'the {what} {path} is a folder; give a file path')
    if folder and path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f'cannot write in the {what} {path}: no permission')
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f'cannot write the {what} {path}: {parent} is a file, not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f'cannot write the {what} {path}: no permission to write in {parent}')
