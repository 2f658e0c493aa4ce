"""Which images a job runs over: image files, folders (recursive), glob patterns and text files of paths, each
image with a stable relative name that its output files are named after.

Example:
    >>> images = collect_images(['photos/', 'extra/*.png', 'list.txt'])
    >>> images.names[:2], images.paths[:2]
    (['photos/a.jpg', 'photos/b/c.jpg'], [PosixPath('/data/photos/a.jpg'), PosixPath('/data/photos/b/c.jpg')])
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..files import IMAGE_EXTS, list_image_files, natural_key

__all__ = ['ImageList', 'collect_images', 'InputSource']

InputSource = str | os.PathLike
_GLOB_CHARS = set('*?[')
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageList:
    """The images of a job, in a fixed order (natural order of their names).

    Attributes:
        paths: absolute paths.
        names: relative POSIX names, unique: the path below the one folder given, else below the deepest folder
            common to all images. Output files are named after them (``a/b.jpg`` -> ``masks/a/b.png``).
        root: the folder the names are relative to.
    """

    paths: tuple[Path, ...]
    names: tuple[str, ...]
    root: Path

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        """A short hash of the absolute paths in order: what a run's records depend on."""
        h = hashlib.sha256('\n'.join(str(p) for p in self.paths).encode())
        return h.hexdigest()[:16]

    def stems(self) -> list[str]:
        """Names without their extension, the base of every per-image output file; checked unique."""
        stems = [str(PurePosixPath(n).with_suffix('')) for n in self.names]
        seen: dict[str, str] = {}
        for stem, name in zip(stems, self.names):
            if stem in seen:
                raise ValueError(f'{seen[stem]} and {name} would write the same output files ({stem}.*); rename '
                                 'one of them, or segment them into separate --out folders')
            seen[stem] = name
        return stems


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def _glob(pattern: str) -> list[Path]:
    """The image files a glob pattern matches (``**``: any subfolders; names starting with '.' only when the
    pattern's do, as in the shell). Through pathlib, which does not follow symlinked folders at ``**``, so that
    a link loop cannot make it hang as ``glob.glob`` does."""
    parts = Path(os.path.expanduser(pattern)).parts
    first = next((k for k, part in enumerate(parts) if glob.has_magic(part)), len(parts) - 1)
    base = Path(*parts[:first]) if first else Path('.')
    rest = list(parts[first:]) + (['*'] if parts[-1] == '**' else [])  # 'photos/**': every file below
    hidden = any(part.startswith('.') for part in rest)
    found = [p for p in base.glob('/'.join(rest)) if p.is_file() and _is_image(p)
             and (hidden or not any(q.startswith('.') for q in p.relative_to(base).parts))]
    return sorted(found, key=lambda p: natural_key(p.as_posix()))  # the first name of a file reached twice


def _from_list_file(path: Path) -> list[Path]:
    """A text file of inputs, one per line: image paths, folders (searched recursively) or glob patterns; blank
    lines and lines starting with '#' are skipped; relative paths are relative to the list file's folder. UTF-8
    (a byte-order mark is fine), any line ends."""
    try:
        lines = path.read_text(encoding='utf-8-sig').splitlines()
    except UnicodeDecodeError:
        raise ValueError(f'{path} is neither an image ({", ".join(IMAGE_EXTS)}) nor a text file of image paths') \
            from None
    out, missing = [], []
    for line in lines:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        p = Path(line).expanduser()
        p = p if p.is_absolute() else path.parent / p
        if p.is_dir():
            out.extend(list_image_files(p, recursive=True))
        elif p.is_file():
            out.append(p)
        elif _GLOB_CHARS & set(line):
            out.extend(_glob(str(p)))
        else:
            missing.append(p)
    if missing:
        raise FileNotFoundError(f'{path} lists {len(missing)} files that do not exist (e.g. {str(missing[0])!r}); '
                                'relative paths are read from the list file\'s folder')
    return out


def _expand(source: InputSource) -> tuple[list[Path], Path | None]:
    """The images of one source and, for a folder, the folder."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return list_image_files(path, recursive=True), path
    if path.is_file():
        return ([path] if _is_image(path) else _from_list_file(path)), None
    if _GLOB_CHARS & set(text):
        return _glob(text), None
    raise FileNotFoundError(f'{text!r} is not an image, a folder, a glob pattern or a text file of image paths')


def _named(p: Path) -> Path:
    """``p`` made absolute with the symlinks of its folders resolved but not its own: an image reached through a
    symlink keeps the link's name, below the folder it was found in."""
    return Path(os.path.realpath(p.parent)) / p.name


def collect_images(sources: InputSource | Sequence[InputSource], exclude: Sequence[InputSource] = ()
                   ) -> ImageList:
    """The images named by ``sources``: image files, folders (searched recursively), glob patterns (``**``
    allowed; quote them so that the shell leaves them alone) and text files of inputs (one per line).

    Duplicates (the same file reached twice, a symlink and its target) are kept once, under the first name they
    were reached by. Files below a folder of ``exclude`` (a job's output folder: outputs are never inputs) are
    left out. Raises FileNotFoundError for a source that names nothing and ValueError when no image is found at
    all.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: dict[Path, Path] = {}  # the file itself -> the path it is named by
    folders: list[Path] = []
    for source in sources:
        found, folder = _expand(source)
        if folder is not None:
            folders.append(folder.resolve())
        for p in found:
            files.setdefault(p.resolve(), _named(p))
    names = ', '.join(repr(os.fspath(s)) for s in sources)
    if not files:
        raise ValueError(f'no images found in {names} (image extensions: {", ".join(IMAGE_EXTS)})')
    for folder in exclude:
        real = Path(os.path.realpath(folder))
        inside = [k for k, p in files.items() if k.is_relative_to(real) or p.is_relative_to(real)]
        if len(inside) == len(files):
            raise ValueError(f'the {len(files)} images found in {names} all lie in the output folder '
                             f'{os.fspath(folder)} (outputs are never inputs); give another output folder')
        if inside:
            _logger.info('leaving out the %d images in the output folder %s: outputs are never inputs', len(inside),
                         os.fspath(folder))
        for k in inside:
            del files[k]
    paths = list(files.values())
    if len(folders) == 1 and len(sources) == 1:
        root = folders[0]
    else:
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    named = sorted(((p.relative_to(root).as_posix(), p) for p in paths), key=lambda t: (natural_key(t[0]), t[0]))
    return ImageList(tuple(p for _, p in named), tuple(n for n, _ in named), root)
