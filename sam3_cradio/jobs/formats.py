"""The files a segmentation job writes from its records (``sam3-cradio segment --format ...``).

Every file is written atomically and its content depends only on the records, so an interrupted and resumed
run, or a sharded one, writes the same bytes as a single uninterrupted run. ``<name>`` below is an image's
relative name (:class:`~.inputs.ImageList`) without its extension.

- ``coco``: ``coco.json``, COCO results with the image list: ``images`` (id, file_name, height, width),
  ``categories`` (one per phrase, ids from 1 in prompt order), ``annotations`` (RLE ``segmentation``, xywh
  ``bbox`` of the predicted box, mask ``area``, ``score``, ``iscrowd`` 0). ``pycocotools.coco.COCO`` loads it;
  ``gt.loadRes(json.load(f)['annotations'])`` scores it against a ground truth with the same image ids.
- ``json``: ``json/<name>.json`` per image: its size and detections (id = its value in the PNG, label,
  category_id, score, box_xyxy, bbox_xywh, area, RLE segmentation), by decreasing score.
- ``png``: ``masks/<name>.png``, instance ids: 0 background, k the k-th detection of the image's JSON; where
  masks overlap, the higher score wins. 8-bit, 16-bit when an image has more than 255 detections.
- ``yolo``: ``yolo/labels/<name>.txt`` (segmentation polygons; class = category index from 0) and
  ``yolo/data.yaml`` (``names``), through supervision's YOLO exporter (exact polygons, no simplification).
- ``voc``: ``voc/<name>.xml``, Pascal VOC through supervision's exporter (boxes and polygons).
- ``annotated``: ``annotated/<name>.png``, the image with masks, boxes and ``label score`` drawn.
- always ``errors.json``: ``[{"file": name, "path": ..., "error": ...}]`` for the images skipped.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files import atomic_path, write_atomic

if TYPE_CHECKING:
    from ..predictor import Sam3Result
    from ..reporting import Report
    from .inputs import ImageList

__all__ = ['FORMATS', 'OUTPUTS', 'check_formats', 'write_outputs']

_logger = logging.getLogger(__name__)

#: format name -> what it writes
FORMATS: dict[str, str] = {
    'coco': 'coco.json: COCO results with the image list (RLE masks, xywh boxes, scores, a category per phrase)',
    'json': 'json/<name>.json: one JSON per image',
    'png': 'masks/<name>.png: instance-id masks (0 background)',
    'yolo': 'yolo/labels/<name>.txt + yolo/data.yaml: YOLO segmentation labels',
    'voc': 'voc/<name>.xml: Pascal VOC',
    'annotated': 'annotated/<name>.png: masks, boxes and labels drawn on the image',
}
#: what the formats write under the output folder (``--overwrite`` removes these)
OUTPUTS = ('coco.json', 'json', 'masks', 'yolo', 'voc', 'annotated', 'errors.json')


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Format names (each may be comma-separated), checked and without repeats, in the order given."""
    if isinstance(formats, str):
        formats = [formats]
    names = [f.strip().lower() for item in formats for f in str(item).split(',') if f.strip()]
    bad = [f for f in names if f not in FORMATS]
    if bad:
        raise ValueError(f'unknown --format {bad[0]!r}; choose from {", ".join(FORMATS)}')
    if not names:
        raise ValueError(f'give at least one --format: {", ".join(FORMATS)}')
    return tuple(dict.fromkeys(names))


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(',', ':'))


def _xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


class _Coco:
    """``coco.json`` written as the records stream by: annotations first (JSON keys have no order), the image
    list (small) at the end, so that no more than one image's detections is in memory. Written beside the final
    name and moved there by :meth:`close`."""

    def __init__(self, path: Path, categories: Sequence[str], info: Mapping[str, Any]) -> None:
        self._path = path
        self._tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._tmp, 'w')
        cats = [{'id': k + 1, 'name': name, 'supercategory': 'object'} for k, name in enumerate(categories)]
        self._file.write('{"info":' + _json(dict(info)) + ',\n"categories":' + _json(cats) + ',\n"annotations":[')
        self._images: list[dict[str, Any]] = []
        self._next_id = 1

    def add(self, image: dict[str, Any], annotations: list[dict[str, Any]]) -> None:
        self._images.append(image)
        for ann in annotations:
            self._file.write((',\n' if self._next_id > 1 else '\n') + _json({'id': self._next_id, **ann}))
            self._next_id += 1

    def close(self, ok: bool) -> None:
        if ok:
            self._file.write('\n],\n"images":[\n' + ',\n'.join(_json(i) for i in self._images) + '\n]}\n')
        self._file.close()
        if ok:
            os.replace(self._tmp, self._path)
        else:
            self._tmp.unlink(missing_ok=True)


def _detections(result: Any, category_index: Mapping[str, int]) -> Any:
    """``result.to_detections()`` with ``class_id`` the job-wide category index (not the result's own)."""
    d = result.to_detections()
    d.class_id = np.array([category_index[label] for label in result.labels], dtype=int)
    return d


def _yolo_lines(detections: Any, hw: tuple[int, int]) -> list[str]:
    from supervision.dataset.formats.yolo import detections_to_yolo_annotations

    return detections_to_yolo_annotations(detections, (*hw, 3), approximation_percentage=0.0)


def _voc_xml(detections: Any, categories: Sequence[str], filename: str, hw: tuple[int, int]) -> str:
    from supervision.dataset.formats.pascal_voc import detections_to_pascal_voc

    return detections_to_pascal_voc(detections, list(categories), filename, (*hw, 3), approximation_percentage=0.0)


def _polygons(export: Any, result: Any, category_index: Mapping[str, int], name: str, h: int, w: int) -> Any:
    """``export(detections, (h, w))`` through supervision; a mask whose holes its exporter cannot join to the
    outline by a seam inside the mask (it raises on some ragged masks) is exported with its holes filled."""
    detections = _detections(result, category_index)
    try:
        return export(detections, (h, w))
    except ValueError as e:
        from scipy.ndimage import binary_fill_holes

        _logger.warning('%s: %s; its polygons are written without holes', name, e)
        detections.mask = np.stack([binary_fill_holes(m) for m in detections.mask]).astype(bool)
        return export(detections, (h, w))


def _instance_png(masks: np.ndarray) -> np.ndarray:
    n, h, w = masks.shape
    ids = np.zeros((h, w), np.uint8 if n <= 255 else np.uint16)
    for k in range(n - 1, -1, -1):  # lowest score first: the higher score wins where masks overlap
        ids[masks[k]] = k + 1
    return ids


def write_outputs(records: Mapping[int, Any], ids: list[int], images: ImageList, stems: Sequence[str],
                  categories: Sequence[str], formats: Sequence[str], out: Path, info: Mapping[str, Any]) -> Report:
    """Write the files of ``formats`` (and ``errors.json``) from a job's records; returns its summary."""
    import pycocotools.mask as mask_utils
    from PIL import Image

    from ..reporting import Report, markdown_table

    category_index = {name: k for k, name in enumerate(categories)}
    need_masks = bool({'png', 'yolo', 'voc', 'annotated'} & set(formats))
    coco = _Coco(out / 'coco.json', categories, {'description': 'sam3-cradio segment', **info}) \
        if 'coco' in formats else None
    errors: list[dict[str, str]] = []
    per_category: Counter[str] = Counter()
    segmented = 0
    ok = False
    try:
        for unit in ids:
            for entry in records[unit]['images']:
                index, name = entry['index'], entry['name']
                stem, path = stems[index], images.paths[index]
                if 'error' in entry:
                    errors.append({'file': name, 'path': str(path), 'error': entry['error']})
                    continue
                segmented += 1
                h, w = entry['size']
                dets = entry['dets']
                per_category.update(d['label'] for d in dets)
                anns = []
                for k, d in enumerate(dets):
                    rle = d['rle']
                    anns.append({'image_id': index + 1, 'category_id': category_index[d['label']] + 1,
                                 'segmentation': rle, 'area': float(mask_utils.area(rle)),
                                 'bbox': _xywh(d['box']), 'score': d['score'], 'iscrowd': 0})
                if coco is not None:
                    coco.add({'id': index + 1, 'file_name': name, 'height': h, 'width': w}, anns)
                if 'json' in formats:
                    doc = {'file': name, 'height': h, 'width': w, 'categories': list(categories), 'detections': [
                        {'id': k + 1, 'label': d['label'], 'category_id': a['category_id'], 'score': d['score'],
                         'box_xyxy': d['box'], 'bbox_xywh': a['bbox'], 'area': a['area'], 'segmentation': d['rle']}
                        for k, (d, a) in enumerate(zip(dets, anns))]}
                    write_atomic(out / 'json' / f'{stem}.json', json.dumps(doc, indent=1) + '\n')
                if not need_masks:
                    continue
                result = record_to_result(entry)
                if 'png' in formats:
                    png = out / 'masks' / f'{stem}.png'
                    with atomic_path(png) as tmp:
                        Image.fromarray(_instance_png(result.masks)).save(tmp, format='PNG')
                if 'yolo' in formats:
                    lines = _polygons(_yolo_lines, result, category_index, name, h, w)
                    write_atomic(out / 'yolo' / 'labels' / f'{stem}.txt', ''.join(f'{line}\n' for line in lines))
                if 'voc' in formats:
                    xml = _polygons(lambda d, hw: _voc_xml(d, categories, Path(name).name, hw), result,
                                    category_index, name, h, w)
                    write_atomic(out / 'voc' / f'{stem}.xml', xml)
                if 'annotated' in formats:
                    _annotate(path, result, out / 'annotated' / f'{stem}.png')
        ok = True
    finally:
        if coco is not None:
            coco.close(ok)
    if 'yolo' in formats:
        from supervision.dataset.formats.yolo import save_data_yaml

        with atomic_path(out / 'yolo' / 'data.yaml') as tmp:
            save_data_yaml(str(tmp), list(categories))
    write_atomic(out / 'errors.json', json.dumps(errors, indent=1) + '\n')
    for e in errors:
        _logger.warning('skipped %s: %s', e['file'], e['error'])

    n = sum(per_category.values())
    files = {f: FORMATS[f].split(':')[0] for f in formats}
    metrics = {'num_images': segmented + len(errors), 'num_segmented': segmented, 'num_errors': len(errors),
               'num_detections': n, 'detections_per_category': {c: per_category.get(c, 0) for c in categories},
               'formats': list(formats), 'files': files}
    rows = [[c, per_category.get(c, 0), round(per_category.get(c, 0) / max(segmented, 1), 2)] for c in categories]
    table = markdown_table(['category', 'detections', 'per image'], rows, '{:.2f}')
    note = (f'\n\n{segmented} images segmented, {len(errors)} skipped (errors.json), {n} detections. Files: '
            + ', '.join(f'{out / p}' for p in files.values()))
    return Report(metrics, table + note, '', {'images': segmented, 'detections': n, 'errors': len(errors)})


def _annotate(path: Path, result: Any, dest: Path) -> None:
    from PIL import Image

    from ..draw import draw_detections
    from ..images import to_rgb_array

    try:
        rgb = to_rgb_array(path)
    except (ValueError, FileNotFoundError) as e:  # changed on disk since it was segmented
        _logger.warning('cannot draw %s: %s', path, e)
        return
    if rgb.shape[:2] != result.masks.shape[1:]:
        _logger.warning('cannot draw %s: it is %dx%d now, %dx%d when it was segmented', path, rgb.shape[1],
                        rgb.shape[0], result.masks.shape[2], result.masks.shape[1])
        return
    with atomic_path(dest) as tmp:
        Image.fromarray(draw_detections(rgb, result.to_detections())).save(tmp, format='PNG')


def result_to_record(result: Sam3Result) -> dict[str, Any]:
    """A result as JSON: detections by decreasing score (ties in prompt order), masks as COCO RLE."""
    from ..evaluation.masks import encode_masks

    order = np.argsort(-np.asarray(result.scores, dtype=np.float64), kind='stable')
    rles = encode_masks(np.asarray(result.masks, dtype=bool)[order])
    h, w = result.masks.shape[1:]
    return {'size': [int(h), int(w)], 'dets': [
        {'label': result.labels[i], 'score': float(result.scores[i]),
         'box': [float(v) for v in result.boxes[i]], 'rle': rle} for i, rle in zip(order, rles)]}


def record_to_result(record: Mapping[str, Any]) -> Sam3Result:
    """The :class:`Sam3Result` of a record of :func:`result_to_record` (masks decoded)."""
    from ..evaluation.masks import decode_masks
    from ..predictor import Sam3Result

    dets = record['dets']
    h, w = record['size']
    return Sam3Result(decode_masks([d['rle'] for d in dets], (h, w)),
                      np.array([d['box'] for d in dets], np.float32).reshape(-1, 4),
                      np.array([d['score'] for d in dets], np.float32), [d['label'] for d in dets])
