"""Machine-readable outputs of a tracking run: per-frame masks in the DAVIS or SA-V layout, a video-object-
segmentation dataset root that ``sam3-cradio eval vos`` reads, and a JSON of per-frame boxes and scores.

    predictor.open('clip.mp4')
    predictor.add_text(0, 'person')
    names = frame_names('clip.mp4', predictor.num_frames)
    with VosMaskWriter('masks/', names) as masks, TrackJsonWriter('track.json', names, predictor) as js:
        for r in predictor.propagate():
            masks.write(r)
            js.write(r)

:func:`~sam3_cradio.jobs.track.track_video` (the ``track`` command) writes them with its ``masks_dir``, ``vos_root``
and ``json_path`` arguments.

Layouts (one PNG per frame, named after the frame: a frame folder's own file names, else ``00000``, ``00001``, ...):

- ``'davis'``: ``<dir>/<frame>.png``, one palette label map per frame (DAVIS 2017's palette and layout): 0 is the
  background and each object has one value, 1 for the first object to appear, 2 for the next (by frame, then by
  object id), so that the objects of the first frame are 1..n, as the DAVIS toolkit counts them. A label map holds
  254 objects (255 means void); later objects are left out of the PNGs, with a warning in the log. Where masks
  overlap (mask-prompt sessions with ``non_overlap_masks=False``), the pixel goes to the object with the higher
  score, then the lower id.
- ``'sav'``: ``<dir>/<obj:03d>/<frame>.png``, one binary PNG (0 / 255) per object and frame, the folder named by
  the object id, as SA-V's ``Annotations_6fps``; every object has a PNG on every frame (empty where it is absent),
  and overlaps stay.

Each PNG is written atomically (a stopped run leaves whole files only). A VOS root (:class:`VosRootWriter`) adds the
frames as JPEG and the sequence list, so that ``sam3-cradio eval vos --dataset davis --root ROOT`` (or ``--dataset
sav``) reads the run as ground truth: the frames under ``JPEGImages/480p/<name>`` (DAVIS's default resolution
folder, whatever the frame size) or ``JPEGImages_24fps/<name>``, the masks under ``Annotations/480p/<name>`` or
``Annotations_6fps/<name>``, and ``name`` added to ``ImageSets/2017/val.txt`` or ``sav_val.txt``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .files import check_writable, save_atomic, write_atomic

if TYPE_CHECKING:
    import supervision as sv

__all__ = ['VideoFrameResult', 'LAYOUTS', 'MAX_DAVIS_OBJECTS', 'davis_palette', 'ObjectLabels', 'VosMaskWriter',
           'VosRootWriter', 'TrackJsonWriter', 'read_davis_masks', 'check_outputs', 'vos_sequence_dirs', 'staged_file',
           'staged_dir']

_logger = logging.getLogger(__name__)

LAYOUTS = ('davis', 'sav')
MAX_DAVIS_OBJECTS = 254  # label values 1..254; 255 is DAVIS's void


@dataclass
class VideoFrameResult:
    """The objects on one frame, in the original video's pixels.

    Attributes:
        frame_idx: the frame.
        obj_ids: (N,) int64 object ids, stable across frames.
        masks: (N, H, W) bool at the original video resolution.
        boxes: (N, 4) float32 xyxy pixels of each mask (``[x0, y0, x1 + 1, y1 + 1]``), inside the frame.
        scores: (N,) float32: the object's detection score (1.0 for objects from clicks or boxes).
        prompt_obj_id: for the result of ``add_box`` / ``add_points``: the id of the object the prompt created or
            refined (it may be missing from ``obj_ids`` when its mask is empty); otherwise None.
    """
    frame_idx: int
    obj_ids: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    prompt_obj_id: int | None = None

    def __len__(self) -> int:
        return len(self.obj_ids)

    def to_detections(self) -> sv.Detections:
        """The objects as ``supervision.Detections``: ``xyxy``, ``mask``, ``confidence`` (the scores) and
        ``tracker_id`` (the object ids), for supervision's annotators, trackers and exports."""
        import supervision as sv

        return sv.Detections(xyxy=self.boxes.astype(np.float32).reshape(-1, 4), mask=self.masks,
                             confidence=self.scores.astype(np.float32), tracker_id=self.obj_ids.astype(int))

    @classmethod
    def empty(cls, frame_idx: int, height: int, width: int) -> VideoFrameResult:
        return cls(frame_idx, np.zeros((0,), np.int64), np.zeros((0, height, width), bool),
                   np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


def vos_sequence_dirs(root: str | os.PathLike, name: str, layout: str = 'davis') -> tuple[Path, Path, Path]:
    """(frames folder, masks folder, sequence list file) of sequence ``name`` in a VOS root of ``layout``."""
    root = Path(root)
    if _check_layout(layout) == 'davis':
        return (root / 'JPEGImages' / '480p' / name, root / 'Annotations' / '480p' / name,
                root / 'ImageSets' / '2017' / 'val.txt')
    return root / 'JPEGImages_24fps' / name, root / 'Annotations_6fps' / name, root / 'sav_val.txt'


def check_outputs(out: str | os.PathLike | None = None, masks_dir: str | os.PathLike | None = None,
                  vos_root: str | os.PathLike | None = None, json_path: str | os.PathLike | None = None,
                  sequence: str | None = None, layout: str = 'davis') -> None:
    """Refuse the outputs of a tracking run that cannot be written, before any model is built or frame read: a
    file where a folder is needed (or the reverse), a folder without write permission, or a VOS root that already
    holds the sequence (a second video would be mixed into it: name another sequence, or remove the old one)."""
    for path, what, folder in ((out, 'video', False), (json_path, 'JSON', False), (masks_dir, 'masks folder', True),
                               (vos_root, 'VOS root', True)):
        if path is not None:
            check_writable(path, what, folder)
    if vos_root is not None and sequence is not None:
        if not sequence or sequence in ('.', '..') or any(c in sequence for c in '/\\'):
            raise ValueError(f'a sequence name is a folder name, got {sequence!r}')
        frames, masks, _ = vos_sequence_dirs(vos_root, sequence, layout)
        taken = [d for d in (frames, masks) if d.is_dir() and any(d.iterdir())]
        if taken:
            raise ValueError(f'the VOS root {vos_root} already holds a sequence {sequence!r} ({taken[0]}); name '
                             f'another one (--sequence NAME) or remove {", ".join(map(str, taken))} first')


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to; it replaces ``path`` only when the block ends
    without an error, and is removed otherwise: an existing file survives a failed or interrupted run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.stem}.partial-{os.getpid()}{path.suffix}')
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; it takes the place of ``path`` (and of what was there) only
    when the block ends without an error, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.partial-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f'.{path.name}.old-{os.getpid()}')
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f'mask layout must be one of {LAYOUTS}, got {layout!r}')
    return layout


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS 2017 (and PASCAL VOC) label PNGs, as PIL's flat [r, g, b, ...] list: label k
    gets the colour spelled by the bits of k (black background, then red, green, yellow, blue, ...)."""
    palette = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


class ObjectLabels:
    """Object id -> DAVIS label value: 1, 2, ... in order of first appearance (by frame, then by id); None past
    :data:`MAX_DAVIS_OBJECTS`."""

    def __init__(self) -> None:
        self.labels: dict[int, int | None] = {}
        self._warned = False

    def update(self, obj_ids: Sequence[int]) -> None:
        """Give the new ids of one frame their labels (call once per frame, in frame order)."""
        for o in sorted(int(i) for i in obj_ids):
            if o in self.labels:
                continue
            n = sum(v is not None for v in self.labels.values())
            if n >= MAX_DAVIS_OBJECTS:
                self.labels[o] = None
                if not self._warned:
                    _logger.warning('more than %d objects: a DAVIS label map holds %d (255 is void), so object %d '
                                    'and later ones are left out of the label PNGs (the sav layout has no limit)',
                                    MAX_DAVIS_OBJECTS, MAX_DAVIS_OBJECTS, o)
                    self._warned = True
            else:
                self.labels[o] = n + 1

    def __getitem__(self, obj_id: int) -> int | None:
        return self.labels[int(obj_id)]


def _save_png(path: Path, image: Image.Image) -> None:
    save_atomic(path, lambda p: image.save(p, format='PNG'))


class VosMaskWriter:
    """Per-frame mask PNGs of a tracking run in the DAVIS or SA-V layout (see the module notes).

    Args:
        folder: where the PNGs go (created).
        names: one file stem per frame of the video (:func:`~sam3_cradio.frames.frame_names`).
        layout: 'davis' (palette label maps) or 'sav' (a binary PNG per object).

    :meth:`write` takes the :class:`~sam3_cradio.video.VideoFrameResult` of each frame once, in frame order (as
    ``propagate('forward')`` gives them); frames never written get no PNG. :meth:`close` (or the ``with`` block)
    completes the sav layout.
    """

    def __init__(self, folder: str | os.PathLike, names: Sequence[str], layout: str = 'davis') -> None:
        self.folder = Path(folder)
        self.names = list(names)
        self.layout = _check_layout(layout)
        self.labels = ObjectLabels()
        self.written: list[int] = []           # frames written, in order
        self._size: tuple[int, int] | None = None
        self._objects: list[int] = []          # sav: object ids seen so far
        self.folder.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> VosMaskWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _name(self, frame_idx: int) -> str:
        if not 0 <= frame_idx < len(self.names):
            raise ValueError(f'frame {frame_idx} is outside the video\'s {len(self.names)} frames')
        return self.names[frame_idx]

    def write(self, result: VideoFrameResult) -> None:
        """Write the masks of one frame."""
        t = int(result.frame_idx)
        name = self._name(t)
        h, w = result.masks.shape[-2:]
        if self._size is None:
            self._size = (int(h), int(w))
        elif self._size != (h, w):
            raise ValueError(f'frame {t} is {w}x{h} but earlier frames were {self._size[1]}x{self._size[0]}')
        ids = [int(i) for i in result.obj_ids]
        self.labels.update(ids)
        if self.layout == 'davis':
            self._write_davis(name, result, ids)
        else:
            self._write_sav(name, result, ids)
        self.written.append(t)

    def _write_davis(self, name: str, result: VideoFrameResult, ids: list[int]) -> None:
        lab = np.zeros(self._size, np.uint8)
        # painted lowest score first (then highest id first), so that the higher score, then the lower id, wins
        order = sorted(range(len(ids)), key=lambda k: (float(result.scores[k]), -ids[k]))
        for k in order:
            value = self.labels[ids[k]]
            if value is not None:
                lab[result.masks[k]] = value
        image = Image.fromarray(lab, mode='P')
        image.putpalette(davis_palette())
        _save_png(self.folder / f'{name}.png', image)

    def _sav_png(self, obj: int, name: str, mask: np.ndarray | None) -> None:
        a = np.zeros(self._size, np.uint8) if mask is None else mask.astype(np.uint8) * 255
        _save_png(self.folder / f'{obj:03d}' / f'{name}.png', Image.fromarray(a, mode='L'))

    def _write_sav(self, name: str, result: VideoFrameResult, ids: list[int]) -> None:
        for o in ids:
            if o not in self._objects:  # a new object: empty masks on the frames written before
                (self.folder / f'{o:03d}').mkdir(exist_ok=True)
                for t in self.written:
                    self._sav_png(o, self.names[t], None)
                self._objects.append(o)
        present = dict(zip(ids, result.masks))
        for o in self._objects:
            self._sav_png(o, name, present.get(o))

    def close(self) -> None:
        """Nothing is buffered (every frame is on disk once written); kept for the ``with`` form."""


class VosRootWriter:
    """A one-sequence VOS dataset root that ``sam3-cradio eval vos`` reads: the frames (JPEG), the masks
    (:class:`VosMaskWriter`) and the sequence list (``name`` added to it; other sequences of the root stay).

    Args:
        root: the dataset root (created; other sequences may already be there).
        name: the sequence name (a folder name: no path separators).
        names: one file stem per frame.
        layout: 'davis' or 'sav'.
        quality: JPEG quality of the frames.
    """

    def __init__(self, root: str | os.PathLike, name: str, names: Sequence[str], layout: str = 'davis',
                 quality: int = 95) -> None:
        if not name or name in ('.', '..') or any(c in name for c in '/\\'):
            raise ValueError(f'a sequence name is a folder name, got {name!r}')
        self.root, self.name, self.layout = Path(root), name, _check_layout(layout)
        self.quality = int(quality)
        check_outputs(vos_root=self.root, sequence=name, layout=layout)  # never mixed into another video's frames
        self.frames_dir, masks_dir, self.list_file = vos_sequence_dirs(self.root, name, layout)
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.masks = VosMaskWriter(masks_dir, names, layout)

    def __enter__(self) -> VosRootWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # a failed or stopped run leaves no half sequence (it would block the corrected command)
            shutil.rmtree(self.frames_dir, ignore_errors=True)
            shutil.rmtree(self.masks.folder, ignore_errors=True)

    def write(self, frame: np.ndarray, result: VideoFrameResult) -> None:
        """Write one frame ((H, W, 3) uint8 RGB, as tracked) and its masks."""
        name = self.masks._name(int(result.frame_idx))
        image = Image.fromarray(np.ascontiguousarray(frame))
        save_atomic(self.frames_dir / f'{name}.jpg', lambda p: image.save(p, format='JPEG', quality=self.quality))
        self.masks.write(result)

    def _add_to_list(self) -> None:
        names = self.list_file.read_text().split() if self.list_file.is_file() else []
        if self.name not in names:
            write_atomic(self.list_file, '\n'.join([*names, self.name]) + '\n')

    def close(self) -> None:
        """Complete the masks and list the sequence (a sequence is listed once all its frames are written)."""
        self.masks.close()
        self._add_to_list()


class TrackJsonWriter:
    """The JSON of a tracking run: per frame, each object's id, DAVIS label value, box, score and mask area.

    Written atomically by :meth:`close` (or the ``with`` block), so a reader never sees a partial file::

        {"video": "clip.mp4", "num_frames": 10, "height": 96, "width": 128, "fps": 10.0,
         "prompt": {"frame": 0, "text": "person", "box": null},
         "objects": [{"id": 0, "label": 1, "first_frame": 0, "last_frame": 9, "num_frames": 10,
                      "max_score": 0.93}],
         "frames": [{"frame": 0, "name": "00000",
                     "objects": [{"id": 0, "label": 1, "box": [12.0, 30.0, 64.0, 90.0], "score": 0.93,
                                  "area": 2310}]}, ...]}

    Boxes are xyxy pixels of each mask (``[min x, min y, max x + 1, max y + 1]``); ``label`` is the object's value in
    the DAVIS masks (null past 254 objects).
    """

    def __init__(self, path: str | os.PathLike, names: Sequence[str], info: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.names = list(names)
        self.info = dict(info or {})
        self.labels = ObjectLabels()
        self.frames: list[dict[str, Any]] = []

    def __enter__(self) -> TrackJsonWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write(self, result: VideoFrameResult) -> None:
        """Add one frame (in frame order)."""
        t = int(result.frame_idx)
        ids = [int(i) for i in result.obj_ids]
        self.labels.update(ids)
        objects = [{'id': o, 'label': self.labels[o], 'box': [round(float(v), 2) for v in result.boxes[k]],
                    'score': round(float(result.scores[k]), 5), 'area': int(result.masks[k].sum())}
                   for k, o in enumerate(ids)]
        self.frames.append({'frame': t, 'name': self.names[t] if 0 <= t < len(self.names) else str(t),
                            'objects': objects})

    def to_dict(self) -> dict[str, Any]:
        seen: dict[int, dict[str, Any]] = {}
        for f in self.frames:
            for ob in f['objects']:
                s = seen.setdefault(ob['id'], {'id': ob['id'], 'label': ob['label'], 'first_frame': f['frame'],
                                               'last_frame': f['frame'], 'num_frames': 0, 'max_score': ob['score']})
                s['last_frame'] = f['frame']
                s['num_frames'] += 1
                s['max_score'] = max(s['max_score'], ob['score'])
        return {**self.info, 'objects': sorted(seen.values(), key=lambda s: s['id']), 'frames': self.frames}

    def close(self) -> None:
        write_atomic(self.path, json.dumps(self.to_dict(), indent=1))


def read_davis_masks(path: str | os.PathLike) -> np.ndarray:
    """A DAVIS label PNG as an (H, W) uint8 label map (the palette indices)."""
    with Image.open(path) as im:
        if im.mode != 'P':
            raise ValueError(f'{path} is a {im.mode} image, not a palette label map')
        return np.array(im)
