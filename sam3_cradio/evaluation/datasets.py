"""Benchmark layouts on disk, checked before any model is built.

Each loader reads only annotation files and directory listings, and raises :class:`DatasetError` (a
``ValueError``) naming the file and what was expected when something is missing or malformed.

- COCO (:func:`load_coco`): ``instances_val2017.json`` + the ``val2017/`` image folder.
- SA-Co/Gold (:func:`load_gold`): the released ``gold_<subset>_merged_{a,b,c}[_release]_test.json`` (one file per
  annotator) + the MetaCLIP and SA-1B image folders.
- DAVIS 2017 (:func:`load_davis`): ``JPEGImages/480p/<seq>/*.jpg``, ``Annotations/480p/<seq>/*.png`` (palette
  label maps, 0 background, 255 void), ``ImageSets/2017/val.txt``.
- SA-V val/test (:func:`load_sav`): ``JPEGImages_24fps/<vid>/*.jpg``, ``Annotations_6fps/<vid>/<obj>/*.png``
  (one binary mask per object, every 4th frame), ``sav_<split>.txt``.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import IMAGE_EXTS, list_image_files, natural_key
from .masks import segmentation_to_rle

__all__ = ['DatasetError', 'CocoDataset', 'load_coco', 'GoldPair', 'GoldSubset', 'load_gold', 'GOLD_SUBSETS',
           'VosSequence', 'VosDataset', 'load_davis', 'load_sav', 'list_images', 'read_image']

PathLike = str | Path


class DatasetError(ValueError):
    """A dataset file or folder is missing or not in the expected layout."""


def _read_json(path: PathLike, what: str, expected: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f'{what} {str(p)!r} does not exist; expected {expected}')
    try:
        with open(p) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(f'{what} {str(p)!r} is not valid JSON ({e}); expected {expected}') from None


def _need_dir(path: PathLike, what: str, expected: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DatasetError(f'{what} {str(p)!r} is not a folder; expected {expected}')
    return p


def _check_keys(items: Any, section: str, keys: Sequence[str], path: Path, expected: str) -> None:
    if not isinstance(items, list):
        raise DatasetError(f'{path}: "{section}" is a {type(items).__name__}, expected a list; {expected}')
    for i, item in enumerate(items):
        lacking = [k for k in keys if not isinstance(item, dict) or k not in item]
        if lacking:
            raise DatasetError(f'{path}: {section}[{i}] lacks {lacking}; each entry needs {list(keys)}. {expected}')


def _check_files(root: Path, names: Sequence[str], what: str) -> None:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetError(f'{len(missing)} of {len(names)} {what} are missing under {root} (e.g. {missing[:3]}); '
                           f'expected the image files named by the annotation "file_name" entries')


def read_image(path: PathLike, info: dict[str, Any] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; with ``info`` (a json image entry), checks its ``height`` and ``width``."""
    from ..images import to_rgb_array

    rgb = to_rgb_array(path)
    if info is not None and rgb.shape[:2] != (int(info['height']), int(info['width'])):
        raise DatasetError(f'{path} is {rgb.shape[1]}x{rgb.shape[0]} but the annotation says '
                           f'{info["width"]}x{info["height"]} (W x H)')
    return rgb


def list_images(folder: PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively), in natural order."""
    root = _need_dir(folder, 'image folder', 'a folder of images (.jpg, .png, ...)')
    files = list_image_files(root, recursive=True)
    if not files:
        raise DatasetError(f'image folder {str(root)!r} holds no images ({", ".join(IMAGE_EXTS)})')
    return files


# --------------------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------------------

COCO_EXPECTED = ('a COCO instances json (e.g. annotations/instances_val2017.json) with "images" (id, file_name, '
                 'height, width), "annotations" (id, image_id, category_id, bbox, area, iscrowd, segmentation) and '
                 '"categories" (id, name)')


@dataclass
class CocoDataset:
    """A COCO instances json and its image folder."""

    ann_file: Path
    image_dir: Path
    gt: dict[str, Any] = field(repr=False)
    images: dict[int, dict[str, Any]] = field(repr=False)
    categories: list[dict[str, Any]] = field(repr=False)
    anns_by_image: dict[int, list[dict[str, Any]]] = field(repr=False)

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.images[image_id]['file_name']


def load_coco(ann_file: PathLike, image_dir: PathLike) -> CocoDataset:
    """Read and check a COCO instances json and its image folder (every image file must exist)."""
    path = Path(ann_file)
    gt = _read_json(path, 'COCO annotation file', COCO_EXPECTED)
    if not isinstance(gt, dict) or any(k not in gt for k in ('images', 'annotations', 'categories')):
        found = sorted(gt) if isinstance(gt, dict) else type(gt).__name__
        raise DatasetError(f'{path}: found {found}; expected {COCO_EXPECTED}')
    _check_keys(gt['images'], 'images', ('id', 'file_name', 'height', 'width'), path, COCO_EXPECTED)
    _check_keys(gt['categories'], 'categories', ('id', 'name'), path, COCO_EXPECTED)
    _check_keys(gt['annotations'], 'annotations',
                ('id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd', 'segmentation'), path, COCO_EXPECTED)
    images = {img['id']: img for img in gt['images']}
    bad_ids = [i for i in images if isinstance(i, bool) or not isinstance(i, int)]
    if bad_ids:
        raise DatasetError(f'{path}: image ids must be integers, got e.g. {bad_ids[0]!r}')
    cats = {c['id'] for c in gt['categories']}
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in gt['annotations']:
        if ann['image_id'] not in images:
            raise DatasetError(f'{path}: annotation {ann["id"]} refers to image {ann["image_id"]}, which is not in '
                               '"images"')
        if ann['category_id'] not in cats:
            raise DatasetError(f'{path}: annotation {ann["id"]} has category {ann["category_id"]}, which is not in '
                               '"categories"')
        by_image[ann['image_id']].append(ann)
    root = _need_dir(image_dir, 'COCO image folder', 'the folder of the json\'s images, e.g. val2017/')
    _check_files(root, [img['file_name'] for img in gt['images']], 'images')
    return CocoDataset(path, root, gt, images, list(gt['categories']), dict(by_image))


# --------------------------------------------------------------------------------------------------------------
# SA-Co/Gold
# --------------------------------------------------------------------------------------------------------------

#: The 7 subsets of SA-Co/Gold, as sam3's ``scripts/eval/gold/eval_sam3.py`` names their files.
GOLD_SUBSETS = ('metaclip', 'sa1b', 'crowded', 'fg_food', 'fg_sports_equipment', 'attributes', 'wiki_common')
_GOLD_FILE = re.compile(r'^gold_(?P<subset>.+)_merged_(?P<annotator>[a-z])(?:_release)?_test\.json$')
GOLD_EXPECTED = ('SA-Co/Gold annotations as released: one COCO-style json per subset and annotator, '
                 'gold_<subset>_merged_<a|b|c>[_release]_test.json, with "images" = image-phrase pairs (id, '
                 'file_name, text_input, height, width, is_instance_exhaustive), "annotations" (image_id, '
                 'segmentation, iscrowd; a pair with none is a negative) and "categories"')


@dataclass
class GoldPair:
    """One image-noun phrase pair and its GT from each annotator."""

    id: int
    file_name: str
    text: str
    height: int
    width: int
    exhaustive: list[bool]
    gts: list[list[dict[str, Any]]] = field(repr=False)     # per annotator: compressed RLEs
    iscrowd: list[list[int]] = field(repr=False)


@dataclass
class GoldSubset:
    name: str
    files: list[Path]
    image_dir: Path
    pairs: dict[int, GoldPair] = field(repr=False)

    def units(self) -> dict[str, list[int]]:
        """Image file name -> ids of its pairs (one image is encoded once for all its phrases)."""
        out: dict[str, list[int]] = defaultdict(list)
        for p in self.pairs.values():
            out[p.file_name].append(p.id)
        return {k: sorted(v) for k, v in out.items()}


def _gold_files(gt_dir: Path) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = defaultdict(dict)
    for p in sorted(gt_dir.iterdir()):
        m = _GOLD_FILE.match(p.name)
        if m:
            found[m['subset']][m['annotator']] = p
    return found


def _load_gold_file(path: Path) -> dict[str, Any]:
    gt = _read_json(path, 'SA-Co/Gold annotation file', GOLD_EXPECTED)
    if not isinstance(gt, dict) or 'images' not in gt or 'annotations' not in gt:
        found = sorted(gt) if isinstance(gt, dict) else type(gt).__name__
        raise DatasetError(f'{path}: found {found}; expected {GOLD_EXPECTED}')
    _check_keys(gt['images'], 'images', ('id', 'file_name', 'text_input', 'height', 'width',
                                         'is_instance_exhaustive'), path, GOLD_EXPECTED)
    _check_keys(gt['annotations'], 'annotations', ('image_id', 'segmentation'), path, GOLD_EXPECTED)
    return gt


def _gold_subset(name: str, files: dict[str, Path], image_dir: Path) -> GoldSubset:
    order = sorted(files)
    jsons = [_load_gold_file(files[a]) for a in order]
    first = jsons[0]
    pairs: dict[int, GoldPair] = {}
    for img in first['images']:
        pairs[img['id']] = GoldPair(img['id'], img['file_name'], str(img['text_input']), int(img['height']),
                                    int(img['width']), [], [], [])
    for a, gt in zip(order, jsons):
        path = files[a]
        imgs = {img['id']: img for img in gt['images']}
        if set(imgs) != set(pairs):
            odd = sorted(set(imgs) ^ set(pairs))[:5]
            raise DatasetError(f'{path}: its image-phrase pair ids differ from {files[order[0]].name}\'s (e.g. {odd});'
                               ' the annotator files of one subset must list the same pairs')
        anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in gt['annotations']:
            if ann['image_id'] not in imgs:
                raise DatasetError(f'{path}: an annotation refers to pair {ann["image_id"]}, which is not in "images"')
            anns[ann['image_id']].append(ann)
        for pid, pair in pairs.items():
            img = imgs[pid]
            if (img['file_name'], str(img['text_input'])) != (pair.file_name, pair.text):
                raise DatasetError(f'{path}: pair {pid} is ({img["file_name"]!r}, {img["text_input"]!r}) but '
                                   f'({pair.file_name!r}, {pair.text!r}) in {files[order[0]].name}')
            pair.exhaustive.append(bool(img['is_instance_exhaustive']))
            pair.gts.append([segmentation_to_rle(x['segmentation'], pair.height, pair.width) for x in anns[pid]])
            pair.iscrowd.append([int(x.get('iscrowd', 0)) for x in anns[pid]])
    _check_files(image_dir, sorted({p.file_name for p in pairs.values()}), f'images of subset {name!r}')
    return GoldSubset(name, [files[a] for a in order], image_dir, pairs)


def load_gold(gt_dir: PathLike, image_dir: PathLike | None = None, sa1b_image_dir: PathLike | None = None,
              subsets: Sequence[str] | None = None) -> list[GoldSubset]:
    """Read the SA-Co/Gold subsets in ``gt_dir``.

    Args:
        gt_dir: folder with the released ``gold_<subset>_merged_<a|b|c>[_release]_test.json`` files.
        image_dir: the MetaCLIP images (every subset but ``sa1b``); ``file_name`` is relative to it.
        sa1b_image_dir: the SA-1B images (subset ``sa1b``).
        subsets: subset names to load (default: every subset found in ``gt_dir``).
    """
    root = _need_dir(gt_dir, 'SA-Co/Gold annotation folder', GOLD_EXPECTED)
    found = _gold_files(root)
    if not found:
        raise DatasetError(f'no SA-Co/Gold annotation file in {str(root)!r}; expected {GOLD_EXPECTED}')
    names = list(subsets) if subsets else sorted(found, key=lambda s: (GOLD_SUBSETS + (s,)).index(s))
    missing = [s for s in names if s not in found]
    if missing:
        raise DatasetError(f'no annotation files for subset(s) {missing} in {root}: expected '
                           f'gold_<subset>_merged_a_test.json (and _b_, _c_); found subsets {sorted(found)}')
    out = []
    for name in names:
        folder = sa1b_image_dir if name == 'sa1b' else image_dir
        flag = '--sa1b-image-dir' if name == 'sa1b' else '--image-dir'
        if folder is None:
            raise DatasetError(f'subset {name!r} needs its image folder ({flag})')
        kind = 'SA-1B' if name == 'sa1b' else 'MetaCLIP'
        out.append(_gold_subset(name, found[name], _need_dir(folder, f'{kind} image folder',
                                                               f'the {kind} images of SA-Co/Gold')))
    return out


# --------------------------------------------------------------------------------------------------------------
# Video object segmentation: DAVIS 2017, SA-V
# --------------------------------------------------------------------------------------------------------------

DAVIS_EXPECTED = ('the DAVIS 2017 layout: <root>/JPEGImages/480p/<seq>/00000.jpg ..., <root>/Annotations/480p/<seq>/'
                  '00000.png ... (palette label maps: 0 background, k object k, 255 void) and '
                  '<root>/ImageSets/2017/val.txt')
SAV_EXPECTED = ('the SA-V val/test layout: <root>/sav_<split>.txt, <root>/JPEGImages_24fps/<video>/00000.jpg ... and '
                '<root>/Annotations_6fps/<video>/<obj:03d>/00000.png ... (one binary mask per object, every 4th '
                'frame)')


@dataclass
class VosSequence:
    """One video with first-frame masks and GT for the evaluated frames.

    Attributes:
        name: sequence / video id.
        frames: the frame images, in order.
        kind: 'davis' (one label-map PNG per frame) or 'sav' (one binary PNG per object and annotated frame).
        objects: object ids (DAVIS: label values 1..max in the first frame; SA-V: the object folder names).
        gt_frames: object -> frame indices with GT (the frames J&F is computed on, before dropping first/last).
        ann_dir: the sequence's annotation folder.
    """

    name: str
    frames: list[Path] = field(repr=False)
    kind: str
    objects: list[int]
    gt_frames: dict[int, list[int]] = field(repr=False)
    ann_dir: Path = field(repr=False)
    obj_dirs: dict[int, str] = field(default_factory=dict, repr=False)  # SA-V: object -> its folder name

    def _label_map(self, frame_idx: int) -> np.ndarray:
        from PIL import Image

        return np.array(Image.open(self.ann_dir / f'{self.frames[frame_idx].stem}.png'))

    def _object_png(self, obj: int, frame_idx: int) -> np.ndarray:
        from PIL import Image

        a = np.array(Image.open(self.ann_dir / self.obj_dirs[obj] / f'{self.frames[frame_idx].stem}.png'))
        return (a > 0) if a.ndim == 2 else (a.max(axis=-1) > 0)

    def first_masks(self) -> dict[int, np.ndarray]:
        """Object -> its (H, W) bool mask on frame 0 (objects absent there are left out)."""
        if self.kind == 'davis':
            lab = self._label_map(0)
            return {o: lab == o for o in self.objects if (lab == o).any()}
        return {o: self._object_png(o, 0) for o in self.objects}

    def gt_masks(self, obj: int) -> np.ndarray:
        """(T, H, W) bool GT of ``obj`` on its ``gt_frames`` (DAVIS void pixels count as background)."""
        frames = self.gt_frames[obj]
        if self.kind == 'davis':
            return np.stack([self._label_map(t) == obj for t in frames])
        return np.stack([self._object_png(obj, t) for t in frames])


@dataclass
class VosDataset:
    root: Path
    kind: str
    sequences: dict[str, VosSequence] = field(repr=False)


def _frame_files(folder: Path, what: str, expected: str) -> list[Path]:
    _need_dir(folder, what, expected)
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png')),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise DatasetError(f'{what} {str(folder)!r} has no frames (.jpg); expected {expected}')
    return files


def _read_list(path: Path, expected: str) -> list[str]:
    if not path.is_file():
        raise DatasetError(f'sequence list {str(path)!r} does not exist; expected {expected}')
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f'sequence list {str(path)!r} is empty; expected {expected}')
    return names


def load_davis(root: PathLike, split: str = 'val', resolution: str = '480p', year: str = '2017') -> VosDataset:
    """Read the DAVIS layout; every frame of a listed sequence must have its annotation PNG."""
    from PIL import Image

    root = _need_dir(root, 'DAVIS root', DAVIS_EXPECTED)
    names = _read_list(root / 'ImageSets' / year / f'{split}.txt', DAVIS_EXPECTED)
    seqs = {}
    for name in names:
        frames = _frame_files(root / 'JPEGImages' / resolution / name, f'frame folder of {name!r}', DAVIS_EXPECTED)
        ann_dir = _need_dir(root / 'Annotations' / resolution / name, f'annotation folder of {name!r}',
                            DAVIS_EXPECTED)
        missing = [f.stem for f in frames if not (ann_dir / f'{f.stem}.png').is_file()]
        if missing:
            raise DatasetError(f'{ann_dir} lacks the annotations of {len(missing)} frames (e.g. {missing[:3]}.png); '
                               f'expected one PNG per frame: {DAVIS_EXPECTED}')
        first = np.array(Image.open(ann_dir / f'{frames[0].stem}.png'))
        if first.ndim != 2:
            raise DatasetError(f'{ann_dir / (frames[0].stem + ".png")} is not a palette (label) PNG; expected '
                               f'{DAVIS_EXPECTED}')
        labels = first[first != 255]
        n = int(labels.max()) if labels.size else 0
        if n == 0:
            raise DatasetError(f'{ann_dir / (frames[0].stem + ".png")} has no object; the first frame must give '
                               'the masks to track')
        objects = list(range(1, n + 1))  # the toolkit's objects: 1 .. max label of the first frame
        seqs[name] = VosSequence(name, frames, 'davis', objects, {o: list(range(len(frames))) for o in objects},
                                 ann_dir)
    return VosDataset(root, 'davis', seqs)


def load_sav(root: PathLike, split: str = 'val') -> VosDataset:
    """Read the SA-V val/test layout; every object must have a mask on the first frame and >= 3 annotated frames."""
    root = _need_dir(root, 'SA-V root', SAV_EXPECTED)
    names = _read_list(root / f'sav_{split}.txt', SAV_EXPECTED)
    seqs = {}
    for name in names:
        frames = _frame_files(root / 'JPEGImages_24fps' / name, f'frame folder of {name!r}', SAV_EXPECTED)
        index = {f.stem: i for i, f in enumerate(frames)}
        ann_dir = _need_dir(root / 'Annotations_6fps' / name, f'annotation folder of {name!r}', SAV_EXPECTED)
        obj_dirs = {}
        for d in sorted(p for p in ann_dir.iterdir() if p.is_dir()):
            if not d.name.isdigit():
                raise DatasetError(f'{d}: object folders are named by number (000, 001, ...); expected {SAV_EXPECTED}')
            obj_dirs[int(d.name)] = d.name
        if not obj_dirs:
            raise DatasetError(f'{ann_dir} has no object folders; expected {SAV_EXPECTED}')
        gt_frames = {}
        for obj, dname in obj_dirs.items():
            stems = sorted((p.stem for p in (ann_dir / dname).glob('*.png')), key=natural_key)
            unknown = [s for s in stems if s not in index]
            if unknown:
                raise DatasetError(f'{ann_dir / dname}: masks {unknown[:3]} have no frame in JPEGImages_24fps/{name}')
            if frames[0].stem not in stems:
                raise DatasetError(f'{ann_dir / dname} has no mask for the first frame ({frames[0].stem}.png), which '
                                   'semi-supervised evaluation prompts with')
            if len(stems) < 3:
                raise DatasetError(f'{ann_dir / dname} has {len(stems)} annotated frames; J&F drops the first and '
                                   'last, so at least 3 are needed')
            gt_frames[obj] = [index[s] for s in stems]
        seqs[name] = VosSequence(name, frames, 'sav', sorted(obj_dirs), gt_frames, ann_dir, obj_dirs)
    return VosDataset(root, 'sav', seqs)
