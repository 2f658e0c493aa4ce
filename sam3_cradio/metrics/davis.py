"""DAVIS J&F (region similarity J and boundary F-measure) as the DAVIS 2017 toolkit computes it.

A numpy/OpenCV port of davisvideochallenge/davis2017-evaluation (``davis2017/metrics.py``: ``db_eval_iou``,
``f_measure``, ``_seg2bmap``; ``davis2017/utils.py``: ``db_statistics``; ``davis2017/evaluation.py``:
``DAVISEvaluation.evaluate``; ``evaluation_method.py``), checked against hand-computed cases in
``tests/test_metrics.py``. What the toolkit does, and so what this does:

- J = ``|P & G| / |P | G|`` per frame; ``1`` when both masks are empty (``np.isclose(union, 0)``).
- F: boundaries by ``_seg2bmap`` (a pixel is boundary if it differs from its right, lower or lower-right
  neighbour; 1-px wide, offset half a pixel towards the origin); each boundary is dilated by
  ``cv2.dilate`` with ``skimage.morphology.disk(bound_pix)``, ``bound_pix = ceil(bound_th * ||(H, W)||)``
  (``bound_th = 0.008``; a ``bound_th >= 1`` is taken as pixels); precision = predicted boundary pixels within
  the dilated GT boundary / predicted boundary pixels, recall the converse; F = 2PR / (P + R), 0 if P + R = 0.
  Edge cases: no predicted boundary and some GT boundary -> P = 1, R = 0 (F = 0); the converse -> P = 0, R = 1
  (F = 0); neither -> P = R = 1 (F = 1).
- Semi-supervised evaluation drops the first frame (the given mask) and the last frame of every sequence
  (``all_gt_masks[:, 1:-1]`` in ``evaluate``), and does not use void pixels (it passes ``None``).
- Per object: mean (``np.nanmean``), recall (fraction of frames with value > 0.5) and decay (mean of the first
  quarter of frames minus mean of the last quarter, ``db_statistics``'s 4 bins) over its frames.
- Global: J-Mean, F-Mean, recalls and decays are plain means over *objects* of all sequences (not over
  sequences); J&F-Mean = (J-Mean + F-Mean) / 2. The toolkit's "per-sequence" table is per object
  (``{sequence}_{object}``); ``per_sequence`` here additionally averages a sequence's objects.

One deliberate difference: ``db_statistics`` casts its bin indices to ``uint8``, which wraps for sequences over
256 evaluated frames; here they are int64 (identical results for every DAVIS sequence).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._convert import as_binary_mask

__all__ = ['DavisMetric', 'DavisResult', 'db_eval_iou', 'db_eval_boundary', 'db_statistics', 'seg2bmap']


def db_eval_iou(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Region similarity J per frame (toolkit ``db_eval_iou`` without void pixels).

    Args:
        gt: ``(..., H, W)`` bool GT masks.
        pred: Predicted masks, same shape.

    Returns:
        IoU over the last two axes; 1 where both masks are empty.

    Example:
        >>> db_eval_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool)).tolist()
        [1.0]
    """
    inter = np.sum(gt & pred, axis=(-2, -1))
    union = np.sum(gt | pred, axis=(-2, -1))
    with np.errstate(divide='ignore', invalid='ignore'):
        j = np.asarray(inter / union, dtype=np.float64)
    j[np.isclose(union, 0)] = 1.0
    return j


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """1-pixel-wide boundary map of a binary mask (toolkit ``_seg2bmap`` at the mask's own size).

    Example:
        >>> m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
        >>> int(seg2bmap(m).sum())  # the perimeter of a 2x2 square
        8
    """
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _bound_pix(shape: tuple[int, int], bound_th: float) -> int:
    return int(bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(shape)))


def _f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float) -> float:
    import cv2
    from skimage.morphology import disk

    kernel = disk(_bound_pix(pred.shape, bound_th)).astype(np.uint8)
    fg_boundary = seg2bmap(pred)
    gt_boundary = seg2bmap(gt)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel)
    n_fg = int(np.sum(fg_boundary))
    n_gt = int(np.sum(gt_boundary))
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_boundary * gt_dil) / float(n_fg)
        recall = np.sum(gt_boundary * fg_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> np.ndarray:
    """Boundary F-measure per frame (toolkit ``db_eval_boundary`` without void pixels).

    Args:
        gt: ``(T, H, W)`` or ``(H, W)`` bool GT masks.
        pred: Predicted masks, same shape.
        bound_th: Boundary tolerance as a fraction of the image diagonal (pixels if >= 1).

    Returns:
        ``(T,)`` F values (a 0-d array for one frame).
    """
    if gt.ndim == 2:
        return np.asarray(_f_measure(pred, gt, bound_th))
    return np.array([_f_measure(p, g, bound_th) for p, g in zip(pred, gt)], dtype=np.float64)


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall (fraction > 0.5) and decay of per-frame values (toolkit ``db_statistics``).

    Example:
        >>> [round(v, 3) for v in db_statistics(np.array([1.0, 0.8, 0.2]))]
        [0.667, 0.667, 0.7]
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=RuntimeWarning)
        mean = float(np.nanmean(per_frame))
        recall = float(np.nanmean(per_frame > 0.5))
    n_bins = 4
    ids = (np.round(np.linspace(1, len(per_frame), n_bins + 1) + 1e-10) - 1).astype(np.int64)
    bins = [per_frame[ids[i]:ids[i + 1] + 1] for i in range(n_bins)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=RuntimeWarning)
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


@dataclass
class DavisResult:
    """DAVIS 2017 J&F, as the toolkit's global table plus per-object and per-sequence means.

    Attributes:
        jf_mean: (J-Mean + F-Mean) / 2.
        j_mean: Mean over objects of each object's mean J.
        j_recall: Mean over objects of the fraction of frames with J > 0.5.
        j_decay: Mean over objects of J decay (first quarter minus last quarter of frames).
        f_mean: As ``j_mean`` for F.
        f_recall: As ``j_recall`` for F.
        f_decay: As ``j_decay`` for F.
        per_object: ``'{sequence}_{obj_id}'`` -> ``{'J', 'F', 'J&F'}`` means (the toolkit's per-sequence CSV).
        per_sequence: sequence -> ``{'J', 'F', 'J&F'}`` averaged over its objects.
        num_objects: Objects evaluated.
        num_frames: Frames evaluated per object, summed.
        bound_th: Boundary tolerance used.
        skip_first_last: Whether the first and last frames were dropped.
    """

    jf_mean: float
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    per_object: dict[str, dict[str, float]] = field(repr=False)
    per_sequence: dict[str, dict[str, float]] = field(repr=False)
    num_objects: int = 0
    num_frames: int = 0
    bound_th: float = 0.008
    skip_first_last: bool = True

    def __str__(self) -> str:
        return '\n'.join([
            f'DAVIS J&F ({len(self.per_sequence)} sequences, {self.num_objects} objects, {self.num_frames} frames, '
            f'bound_th={self.bound_th:g}, first/last frames {"skipped" if self.skip_first_last else "kept"})',
            ' J&F-Mean  J-Mean  J-Recall  J-Decay  F-Mean  F-Recall  F-Decay',
            f' {self.jf_mean:8.3f}  {self.j_mean:6.3f}  {self.j_recall:8.3f}  {self.j_decay:7.3f}  '
            f'{self.f_mean:6.3f}  {self.f_recall:8.3f}  {self.f_decay:7.3f}'])

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict; the global keys are the toolkit's column names."""
        return {'J&F-Mean': self.jf_mean, 'J-Mean': self.j_mean, 'J-Recall': self.j_recall,
                'J-Decay': self.j_decay, 'F-Mean': self.f_mean, 'F-Recall': self.f_recall,
                'F-Decay': self.f_decay, 'per_object': {k: dict(v) for k, v in self.per_object.items()},
                'per_sequence': {k: dict(v) for k, v in self.per_sequence.items()},
                'num_objects': self.num_objects, 'num_frames': self.num_frames, 'bound_th': self.bound_th,
                'skip_first_last': self.skip_first_last}


class DavisMetric:
    """DAVIS 2017 semi-supervised J&F, per object, fed one object's whole sequence at a time.

    Example:
        >>> gt = np.zeros((3, 10, 10), bool); gt[:, 2:6, 2:6] = True
        >>> r = DavisMetric(skip_first_last=False).update('seq', 1, gt, gt).compute()
        >>> r.jf_mean, r.per_sequence['seq']['J&F']
        (1.0, 1.0)

    Args:
        bound_th: Boundary tolerance as a fraction of the image diagonal (toolkit default 0.008), or pixels if
            >= 1.
        skip_first_last: Drop each sequence's first and last frames, as the toolkit's semi-supervised
            evaluation does. Pass ``False`` if the caller already dropped them.
    """

    def __init__(self, bound_th: float = 0.008, skip_first_last: bool = True) -> None:
        if bound_th <= 0:
            raise ValueError(f'bound_th: expected a positive tolerance (0.008 in DAVIS), got {bound_th}')
        self.bound_th = float(bound_th)
        self.skip_first_last = skip_first_last
        self._objects: dict[tuple[str, Hashable], tuple[np.ndarray, np.ndarray]] = {}

    def reset(self) -> DavisMetric:
        """Forgets all objects. Returns self."""
        self._objects = {}
        return self

    def update(self, sequence: str, obj_id: Hashable, pred_masks: Any, gt_masks: Any) -> DavisMetric:
        """Scores one object over one sequence.

        Args:
            sequence: Sequence name.
            obj_id: Object id within the sequence (DAVIS label value).
            pred_masks: ``(T, H, W)`` bool predicted masks of this object, every frame of the sequence (an object
                the method lost is all False).
            gt_masks: ``(T, H, W)`` bool GT masks of this object (void pixels, label 255, are background).

        Returns:
            self

        Raises:
            ValueError: Shapes differ, too few frames, or the object was already added.
        """
        key = (str(sequence), obj_id)
        if key in self._objects:
            raise ValueError(f'object {obj_id!r} of sequence {sequence!r} was already added')
        pred = as_binary_mask(pred_masks, 'pred_masks', 3)
        gt = as_binary_mask(gt_masks, 'gt_masks', 3)
        if pred.shape != gt.shape:
            raise ValueError(f'pred_masks: shape {pred.shape} differs from gt_masks {gt.shape}; expected (T, H, W) '
                             'at the annotation resolution for the same frames')
        if self.skip_first_last:
            if gt.shape[0] < 3:
                raise ValueError(f'gt_masks: {gt.shape[0]} frames leave none once the first and last are dropped; '
                                 'pass whole sequences, or DavisMetric(skip_first_last=False)')
            pred, gt = pred[1:-1], gt[1:-1]
        elif gt.shape[0] == 0:
            raise ValueError('gt_masks: expected at least one frame, got 0')
        self._objects[key] = (db_eval_iou(gt, pred), db_eval_boundary(gt, pred, self.bound_th))
        return self

    def compute(self) -> DavisResult:
        """Aggregates objects as the toolkit's ``evaluation_method.py`` does.

        Returns:
            A :class:`DavisResult`.

        Raises:
            RuntimeError: No object was added.
        """
        if not self._objects:
            raise RuntimeError('no object to evaluate; call update() first')
        stats: dict[str, list[tuple[float, float, float]]] = {'J': [], 'F': []}
        per_object: dict[str, dict[str, float]] = {}
        by_seq: dict[str, list[tuple[float, float]]] = {}
        n_frames = 0
        for (seq, obj), (j, f) in self._objects.items():
            js, fs = db_statistics(j), db_statistics(f)
            stats['J'].append(js)
            stats['F'].append(fs)
            per_object[f'{seq}_{obj}'] = {'J': js[0], 'F': fs[0], 'J&F': (js[0] + fs[0]) / 2}
            by_seq.setdefault(seq, []).append((js[0], fs[0]))
            n_frames += len(j)
        j_stats, f_stats = np.asarray(stats['J']), np.asarray(stats['F'])
        j_m, j_r, j_d = (float(v) for v in j_stats.mean(axis=0))
        f_m, f_r, f_d = (float(v) for v in f_stats.mean(axis=0))
        per_sequence = {}
        for seq, vals in by_seq.items():
            jm, fm = (float(v) for v in np.mean(vals, axis=0))
            per_sequence[seq] = {'J': jm, 'F': fm, 'J&F': (jm + fm) / 2}
        return DavisResult(jf_mean=(j_m + f_m) / 2, j_mean=j_m, j_recall=j_r, j_decay=j_d, f_mean=f_m,
                           f_recall=f_r, f_decay=f_d, per_object=per_object, per_sequence=per_sequence,
                           num_objects=len(self._objects), num_frames=n_frames, bound_th=self.bound_th,
                           skip_first_last=self.skip_first_last)
