"""COCO instance segmentation and detection AP, computed by pycocotools.

``CocoMetric`` collects predictions per image, converts them to the COCO result format (masks to compressed RLE
with ``pycocotools.mask.encode``, xyxy pixel boxes to ``[x, y, w, h]``) and runs the unmodified
``pycocotools.cocoeval.COCOeval`` once per IoU type, as detectron2's ``COCOEvaluator`` does: segm results carry no
``bbox`` (so ``loadRes`` takes each detection's area from its mask) and bbox results carry no ``segmentation``.
Numbers are pycocotools' ``stats``: AP in [0, 1], and ``-1`` where the ground truth has no object in an area
range.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ._convert import MaskLike, as_vector, to_rles, xyxy_to_xywh

__all__ = ['CocoMetric', 'CocoResult', 'COCO_STAT_NAMES']

_logger = logging.getLogger(__name__)

#: Names of pycocotools' ``COCOeval.stats`` entries, in order.
COCO_STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')
_IOU_TYPES = ('segm', 'bbox')
_REQUIRED_ANN_KEYS = ('id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd')


@dataclass
class CocoResult:
    """COCO AP/AR per IoU type, as pycocotools' ``COCOeval.stats``.

    Attributes:
        segm: Mask metrics ``{'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm',
            'ARl'}``, or ``None`` if masks were not evaluated.
        bbox: Box metrics with the same keys, or ``None`` if boxes were not evaluated.
        num_images: Images evaluated.
        num_predictions: Predictions received.
    """

    segm: dict[str, float] | None
    bbox: dict[str, float] | None
    num_images: int
    num_predictions: int

    @property
    def mask_ap(self) -> float:
        """Mask AP@[.50:.95] (``segm['AP']``)."""
        if self.segm is None:
            raise KeyError('masks were not evaluated; build CocoMetric with iou_types containing "segm"')
        return self.segm['AP']

    @property
    def box_ap(self) -> float:
        """Box AP@[.50:.95] (``bbox['AP']``)."""
        if self.bbox is None:
            raise KeyError('boxes were not evaluated; build CocoMetric with iou_types containing "bbox"')
        return self.bbox['AP']

    def __str__(self) -> str:
        rows = [('AP', '0.50:0.95', '   all'), ('AP50', '0.50     ', '   all'), ('AP75', '0.75     ', '   all'),
                ('APs', '0.50:0.95', ' small'), ('APm', '0.50:0.95', 'medium'), ('APl', '0.50:0.95', ' large')]
        lines = [f'COCO ({self.num_images} images, {self.num_predictions} predictions)']
        for kind, stats in (('segm', self.segm), ('bbox', self.bbox)):
            if stats is None:
                continue
            for key, iou, area in rows:
                lines.append(f' {kind} Average Precision (AP) @[ IoU={iou} | area={area} | maxDets=100 ] = '
                             f'{stats[key]:0.3f}')
        return '\n'.join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict ``{'segm': {...}, 'bbox': {...}, 'num_images', 'num_predictions'}``."""
        return {'segm': None if self.segm is None else dict(self.segm),
                'bbox': None if self.bbox is None else dict(self.bbox),
                'num_images': self.num_images, 'num_predictions': self.num_predictions}


def _load_gt(gt: Mapping[str, Any] | str | os.PathLike, iou_types: Sequence[str]) -> COCO:
    if isinstance(gt, (str, os.PathLike)):
        with open(gt) as f:
            dataset = json.load(f)
    elif isinstance(gt, Mapping):
        dataset = copy.deepcopy(dict(gt))  # COCOeval converts polygons to RLE in place: keep the caller's intact
    else:
        raise TypeError(f'gt: expected a COCO json dict or a path to one, got {type(gt).__name__}')
    missing = [k for k in ('images', 'annotations', 'categories') if k not in dataset]
    if missing:
        raise ValueError(f'gt: COCO json lacks {missing}; expected "images", "annotations" and "categories"')
    need = _REQUIRED_ANN_KEYS + (('segmentation',) if 'segm' in iou_types else ())
    for ann in dataset['annotations']:
        lacking = [k for k in need if k not in ann]
        if lacking:
            raise ValueError(f'gt: annotation {ann.get("id", "?")} lacks {lacking}; COCOeval needs {list(need)}')
    for img in dataset['images']:
        if 'height' not in img or 'width' not in img:
            raise ValueError(f'gt: image {img.get("id", "?")} lacks "height"/"width"')
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoMetric:
    """COCO mask AP and box AP (pycocotools) for instance segmentation / detection.

    Example:
        >>> metric = CocoMetric('instances_val2017.json')  # doctest: +SKIP
        >>> for image_id, out in predictions:  # doctest: +SKIP
        ...     metric.update(image_id, out.labels, out.masks, out.boxes, out.scores)
        >>> print(metric.compute())  # doctest: +SKIP

    Args:
        gt: COCO ground truth, a json dict (copied, never modified) or a path to a json file. Annotations need
            ``id, image_id, category_id, bbox, area, iscrowd`` (and ``segmentation`` for mask AP); images need
            ``height`` and ``width``.
        iou_types: Which of ``'segm'`` (mask AP) and ``'bbox'`` (box AP) to evaluate.
        only_updated_images: Evaluate only images passed to :meth:`update` (e.g. a quick run on a subset). By
            default every GT image is evaluated, as in COCO, and an image never updated counts as all misses.
    """

    def __init__(self, gt: Mapping[str, Any] | str | os.PathLike, iou_types: Sequence[str] = _IOU_TYPES,
                 only_updated_images: bool = False) -> None:
        iou_types = tuple(iou_types)
        bad = [t for t in iou_types if t not in _IOU_TYPES]
        if bad or not iou_types:
            raise ValueError(f'iou_types: expected a non-empty subset of {list(_IOU_TYPES)}, got {list(iou_types)}')
        self.iou_types = iou_types
        self.only_updated_images = only_updated_images
        self._gt = _load_gt(gt, iou_types)
        self._cat_ids = set(self._gt.getCatIds())
        self._results: dict[str, list[dict[str, Any]]] = {}
        self._seen: set = set()
        self.reset()

    def reset(self) -> CocoMetric:
        """Forgets all predictions. Returns self."""
        self._results = {t: [] for t in self.iou_types}
        self._seen = set()
        return self

    def update(self, image_id: int, category_ids: int | Sequence[int] | np.ndarray,
               masks: MaskLike | None = None, boxes: Any | None = None,
               scores: Any | None = None) -> CocoMetric:
        """Adds the predictions for one image (call once per image; an image with no detections may pass N=0).

        Args:
            image_id: A GT image id.
            category_ids: One category id for all N predictions, or N ids (GT category ids, not indices).
            masks: ``(N, H, W)`` bool masks at the GT image's size, or N COCO RLE dicts. Required for mask AP.
            boxes: ``(N, 4)`` xyxy boxes in pixels. If ``None``, boxes are the masks' tight boxes
                (``pycocotools.mask.toBbox``).
            scores: ``(N,)`` confidences, used to rank detections.

        Returns:
            self

        Raises:
            ValueError: Unknown image/category id, image updated twice, or inconsistent shapes/counts.
        """
        if image_id not in self._gt.imgs:
            raise ValueError(f'image_id {image_id!r} is not in the GT ({len(self._gt.imgs)} images)')
        if image_id in self._seen:
            raise ValueError(f'image_id {image_id!r} was already updated; pass all its predictions in one call')
        if scores is None:
            raise ValueError('scores: expected (N,) confidences, got None')
        img = self._gt.imgs[image_id]
        size = (int(img['height']), int(img['width']))
        rles = None if masks is None else to_rles(masks, 'masks', size)
        score_v = np.asarray(scores, dtype=np.float64)
        if score_v.ndim != 1:
            raise ValueError(f'scores: expected (N,) confidences, got shape {score_v.shape}')
        n = score_v.shape[0]
        score_v = as_vector(score_v, 'scores', n)
        if rles is not None and len(rles) != n:
            raise ValueError(f'masks: expected {n} masks (one per score), got {len(rles)}')
        if boxes is not None:
            xywh = xyxy_to_xywh(boxes, 'boxes', n)
        elif rles is not None:
            xywh = mask_utils.toBbox(rles).reshape(-1, 4) if rles else np.zeros((0, 4))
        else:
            xywh = None
        if 'segm' in self.iou_types and rles is None:
            raise ValueError('masks: required for mask AP (iou_types contains "segm"); pass masks or build '
                             'CocoMetric(..., iou_types=("bbox",))')
        if xywh is None:
            raise ValueError('boxes: expected (N, 4) xyxy boxes (or masks to derive them from), got neither')
        cats = as_vector(category_ids, 'category_ids', n, dtype=np.int64)
        unknown = sorted(set(cats.tolist()) - self._cat_ids)
        if unknown:
            raise ValueError(f'category_ids: {unknown} are not GT category ids; valid ids are '
                             f'{sorted(self._cat_ids)[:20]}{"..." if len(self._cat_ids) > 20 else ""}')
        for i in range(n):
            base = {'image_id': image_id, 'category_id': int(cats[i]), 'score': float(score_v[i])}
            if 'segm' in self._results:
                self._results['segm'].append({**base, 'segmentation': rles[i]})
            if 'bbox' in self._results:
                self._results['bbox'].append({**base, 'bbox': [float(v) for v in xywh[i]]})
        self._seen.add(image_id)
        return self

    def _evaluate(self, iou_type: str) -> dict[str, float]:
        results = [dict(r) for r in self._results[iou_type]]  # loadRes adds keys in place
        with contextlib.redirect_stdout(io.StringIO()):
            if results:
                dt = self._gt.loadRes(results)
            else:  # loadRes cannot take an empty list
                dt = COCO()
                dt.dataset = {'images': list(self._gt.dataset['images']), 'annotations': [],
                              'categories': copy.deepcopy(self._gt.dataset['categories'])}
                dt.createIndex()
            ev = COCOeval(self._gt, dt, iouType=iou_type)
            if self.only_updated_images:
                ev.params.imgIds = sorted(self._seen)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {k: float(v) for k, v in zip(COCO_STAT_NAMES, ev.stats)}

    def compute(self) -> CocoResult:
        """Runs COCOeval for each IoU type.

        Returns:
            A :class:`CocoResult`.

        Raises:
            RuntimeError: ``only_updated_images=True`` and nothing was updated.
        """
        if self.only_updated_images and not self._seen:
            raise RuntimeError('no image was updated; call update() before compute() (only_updated_images=True)')
        stats = {t: self._evaluate(t) for t in self.iou_types}
        n_images = len(self._seen) if self.only_updated_images else len(self._gt.imgs)
        n_preds = len(next(iter(self._results.values())))
        _logger.info('COCO eval on %d images, %d predictions', n_images, n_preds)
        return CocoResult(segm=stats.get('segm'), bbox=stats.get('bbox'), num_images=n_images,
                          num_predictions=n_preds)
