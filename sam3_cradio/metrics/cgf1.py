"""SA-Co cgF1 (classification-gated F1), the SAM3 metric for promptable concept segmentation.

This is a line-by-line numpy port of sam3's evaluator (``sam3/eval/cgf1_eval.py`` in sam3 0.1.4, identical to
facebookresearch/sam3 ``99d02f2``: ``CGF1Eval.evaluateImg`` / ``accumulate`` / ``summarize`` and
``CGF1Evaluator._select_best_scoring``), fed one image-phrase pair at a time instead of json files, and without
importing ``sam3`` (whose ``__init__`` builds the model modules and imports torch). ``tests/test_metrics.py``
checks it against sam3's own ``CGF1Evaluator``. The definitions, as sam3 implements them:

- A *pair* is one (image, noun phrase); it holds GT instances of that phrase only (sam3's "image_id").
- Predictions with ``score >= score_threshold`` are kept (sam3: ``d["score"] >= self.threshold``, default 0.5);
  the rest are dropped before anything else. GT with ``iscrowd`` is dropped too (COCOeval's ``ignore``).
- Matching is one-to-one and *Hungarian* on IoU (``scipy.optimize.linear_sum_assignment(-ious)``, maximising the
  summed IoU, scores ignored), done once per pair; at each IoU threshold t in 0.50:0.05:0.95 a matched pair with
  ``IoU >= t`` is a TP, ``FP = kept predictions - TP``, ``FN = GT - TP``.
- Image level (independent of t): a pair is IL-positive if it has GT, IL-predicted if it has a kept prediction;
  ``IL_MCC`` is the Matthews correlation of those outcomes over all pairs, computed once (not per t), with
  ``+1e-6`` in the denominator.
- Positive micro F1 (pmF1) at t pools over pairs: TPs and FNs from every pair with GT, FPs only from pairs that
  have GT *and* a kept prediction (a false positive on a negative pair costs IL_MCC, not pmF1). Precision,
  recall and F1 carry sam3's ``+1e-4`` in their denominators.
- ``cgF1@t = pmF1@t * IL_MCC``; cgF1 is the mean over the 10 thresholds (sam3's ``summarize`` averages the values
  ``> -1``). cgF1@0.5 and cgF1@0.75 are single thresholds.
- Pairs not ``is_instance_exhaustive`` are not evaluated. With several GT sets per pair (SA-Co/Gold's three
  annotators, the "oracle" setting) the pair takes whichever set gives the highest mean per-pair F1 over t (the
  first on ties); a set against which the pair is a true negative (no GT, no kept prediction) always wins.

Reporting follows sam3's ``scripts/eval/gold/eval_sam3.py``: cgF1 and pmF1 x 100, IL_MCC as is. SA-Co/Gold's
headline number is the plain mean over its 7 subsets (``average_cgf1``). sam3's ``demo_eval.py`` ("demo"
setting: thresholded predictions during training) is a different evaluator, not a sub-metric of cgF1.
"""
from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from ._convert import MaskLike, as_vector, mask_size, to_rles, xyxy_to_xywh

__all__ = ['CgF1Metric', 'CgF1Result', 'average_cgf1', 'IOU_THRESHOLDS', 'SAM3_STAT_NAMES']

_logger = logging.getLogger(__name__)

#: pycocotools' IoU thresholds 0.50:0.05:0.95, computed exactly as ``pycocotools.cocoeval.Params`` does.
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)

#: (name, image_level, iou_threshold) of sam3's ``CGF1_METRICS``, in order; ``None`` = mean over thresholds.
SAM3_STAT_NAMES = tuple(
    [(n, False, None) for n in ('cgF1', 'precision', 'recall', 'F1', 'positive_macro_F1', 'positive_micro_F1',
                                'positive_micro_precision')]
    + [(n, True, None) for n in ('IL_precision', 'IL_recall', 'IL_F1', 'IL_FPR', 'IL_MCC')]
    + [(n, False, t) for t in (0.5, 0.75) for n in ('cgF1', 'precision', 'recall', 'F1', 'positive_macro_F1',
                                                    'positive_micro_F1', 'positive_micro_precision')])

_IOU_TYPES = ('segm', 'bbox')


@dataclass
class _PairEval:
    """sam3 ``CGF1Eval.evaluateImg``'s dict for one pair; ``tps is None`` for a true negative."""

    il: str  # 'TP', 'FP', 'TN', 'FN'
    num_dt: int
    tps: np.ndarray | None = None
    fps: np.ndarray | None = None
    fns: np.ndarray | None = None
    local_f1: np.ndarray | None = None
    positive: bool = False  # has GT and a kept prediction ("local_positive_F1s" in sam3)


def _evaluate_pair(gt: list[Any], gt_crowd: np.ndarray, dt: list[Any], scores: np.ndarray, threshold: float,
                   thresholds: np.ndarray) -> _PairEval:
    keep_gt, keep_dt = ~gt_crowd, scores >= threshold
    gt = [g for g, k in zip(gt, keep_gt) if k]
    dt = [d for d, k in zip(dt, keep_dt) if k]
    n_gt, n_dt, n_t = len(gt), len(dt), len(thresholds)
    if n_gt == 0 and n_dt == 0:
        return _PairEval(il='TN', num_dt=0)
    if n_dt == 0:
        return _PairEval(il='FN', num_dt=0, tps=np.zeros(n_t, np.int64), fps=np.zeros(n_t, np.int64),
                         fns=np.full(n_t, n_gt, np.int64), local_f1=np.zeros(n_t, np.int64))
    if n_gt == 0:
        match = np.zeros(0)
    else:
        from scipy.optimize import linear_sum_assignment

        ious = np.asarray(mask_utils.iou(dt, gt, [0] * n_gt), dtype=np.float64).reshape(n_dt, n_gt)
        rows, cols = linear_sum_assignment(-ious)
        match = ious[rows, cols]
    tps = np.array([(match >= t).sum() for t in thresholds], dtype=np.int64)
    fps, fns = n_dt - tps, n_gt - tps
    precision = tps / (tps + fps + 1e-4)
    recall = tps / (tps + fns + 1e-4)
    f1 = 2 * precision * recall / (precision + recall + 1e-4)
    return _PairEval(il='TP' if n_gt > 0 else 'FP', num_dt=n_dt, tps=tps, fps=fps, fns=fns, local_f1=f1,
                     positive=n_gt > 0)


def _select_best(evals: list[_PairEval]) -> _PairEval:
    """sam3 ``CGF1Evaluator._select_best_scoring`` for one pair."""
    best = evals[0]
    for cur in evals[1:]:
        if best.local_f1 is not None and cur.local_f1 is not None:
            if cur.local_f1.mean() > best.local_f1.mean():
                best = cur
        elif cur.local_f1 is None:
            best = cur
    return best


@dataclass
class CgF1Result:
    """cgF1 and its factors, reported the way SAM3 reports them.

    Attributes:
        cgf1: cgF1 x 100, mean over IoU 0.50:0.95 (SAM3's headline number).
        il_mcc: Image-level MCC, in [-1, 1] (not scaled).
        pmf1: Positive micro F1 x 100, mean over IoU 0.50:0.95.
        cgf1_50: cgF1 x 100 at IoU 0.5.
        cgf1_75: cgF1 x 100 at IoU 0.75.
        score_threshold: Predictions with ``score >= score_threshold`` were kept.
        iou_type: ``'segm'`` or ``'bbox'``.
        num_pairs: Image-phrase pairs evaluated.
        num_skipped: Pairs passed with ``exhaustive=False`` and so not evaluated.
        il_counts: Image-level confusion counts ``{'TP', 'FP', 'TN', 'FN'}``.
        iou_thresholds: The IoU thresholds.
        tp: TPs per IoU threshold, pooled over pairs.
        fp: FPs per threshold (all pairs).
        fn: FNs per threshold.
        positive_micro_fp: FPs per threshold on pairs with GT and a kept prediction (pmF1's FPs).
        sam3_stats: The dict sam3's ``CGF1Evaluator.evaluate`` returns, same keys
            (``cgF1_eval_{iou_type}_{name}[@thr]``) and values (fractions; -1 where undefined).
    """

    cgf1: float
    il_mcc: float
    pmf1: float
    cgf1_50: float
    cgf1_75: float
    score_threshold: float
    iou_type: str
    num_pairs: int
    num_skipped: int
    il_counts: dict[str, int]
    iou_thresholds: np.ndarray = field(repr=False)
    tp: np.ndarray = field(repr=False)
    fp: np.ndarray = field(repr=False)
    fn: np.ndarray = field(repr=False)
    positive_micro_fp: np.ndarray = field(repr=False)
    sam3_stats: dict[str, float] = field(repr=False)

    def __str__(self) -> str:
        return '\n'.join([
            f'cgF1 ({self.iou_type}, score >= {self.score_threshold:g}, {self.num_pairs} image-phrase pairs, '
            f'{self.num_skipped} skipped as non-exhaustive)',
            f' cgF1   @[ IoU=0.50:0.95 ] = {self.cgf1:6.2f}',
            f' cgF1   @[ IoU=0.50      ] = {self.cgf1_50:6.2f}',
            f' cgF1   @[ IoU=0.75      ] = {self.cgf1_75:6.2f}',
            f' pmF1   @[ IoU=0.50:0.95 ] = {self.pmf1:6.2f}',
            f' IL_MCC                    = {self.il_mcc:6.3f}'])

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of all fields (arrays as lists)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in (
            'cgf1', 'il_mcc', 'pmf1', 'cgf1_50', 'cgf1_75', 'score_threshold', 'iou_type', 'num_pairs',
            'num_skipped')}
        out['il_counts'] = dict(self.il_counts)
        for k in ('iou_thresholds', 'tp', 'fp', 'fn', 'positive_micro_fp'):
            out[k] = np.asarray(getattr(self, k)).tolist()
        out['sam3_stats'] = dict(self.sam3_stats)
        return out


def average_cgf1(results: Mapping[str, CgF1Result]) -> dict[str, float]:
    """Plain mean of cgF1, IL_MCC and pmF1 over subsets, as SA-Co/Gold's "Average" column.

    Args:
        results: Subset name to its result (SA-Co/Gold has 7 subsets, each evaluated on its own).

    Returns:
        ``{'cgf1', 'il_mcc', 'pmf1'}`` averaged over subsets (cgF1 and pmF1 x 100).
    """
    if not results:
        raise ValueError('results: expected at least one subset result')
    return {k: float(np.mean([getattr(r, k) for r in results.values()])) for k in ('cgf1', 'il_mcc', 'pmf1')}


class CgF1Metric:
    """SA-Co cgF1 over image-phrase pairs (SAM3's definition; see the module docstring).

    Example:
        >>> metric = CgF1Metric(score_threshold=0.5)
        >>> gt = np.zeros((1, 8, 8), bool); gt[0, :4, :4] = True
        >>> r = metric.update('img1/cat', gt, gt, [0.9]).update('img2/cat', gt[:0], gt[:0], []).compute()
        >>> round(r.cgf1, 2), round(r.il_mcc, 3)
        (99.98, 1.0)

    Args:
        score_threshold: Keep predictions with ``score >= score_threshold``. SAM3 evaluates at 0.5 (its
            ``CGF1Eval`` default); some forks report 0.3. Recorded in the result.
        iou_type: ``'segm'`` (masks) or ``'bbox'`` (xyxy boxes).
    """

    def __init__(self, score_threshold: float = 0.5, iou_type: str = 'segm') -> None:
        if iou_type not in _IOU_TYPES:
            raise ValueError(f'iou_type: expected one of {list(_IOU_TYPES)}, got {iou_type!r}')
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f'score_threshold: expected a value in [0, 1], got {score_threshold}')
        self.score_threshold = float(score_threshold)
        self.iou_type = iou_type
        self.iou_thresholds = IOU_THRESHOLDS.copy()
        self._pairs: dict[Hashable, _PairEval] = {}
        self._skipped: set = set()
        _logger.info('cgF1: keeping predictions with score >= %g (%s IoU)', self.score_threshold, iou_type)

    def reset(self) -> CgF1Metric:
        """Forgets all pairs. Returns self."""
        self._pairs, self._skipped = {}, set()
        return self

    def _regions(self, x: Any, name: str) -> list[Any]:
        if self.iou_type == 'segm':
            return to_rles(x, name)
        return [list(b) for b in xyxy_to_xywh(x, name)]

    def update(self, pair_id: Hashable, gt: MaskLike | Any, pred: MaskLike | Any, scores: Any, *,
               gt_iscrowd: Any | None = None, extra_gts: Sequence[MaskLike | Any] = (),
               extra_gt_iscrowd: Sequence[Any] | None = None,
               exhaustive: bool | Sequence[bool] = True) -> CgF1Metric:
        """Adds one image-phrase pair.

        Args:
            pair_id: Unique id of the (image, phrase) pair, e.g. the SA-Co json's image id.
            gt: GT instances of the phrase: ``(G, H, W)`` bool masks or G COCO RLEs (segm), or ``(G, 4)`` xyxy
                boxes (bbox). G may be 0 (a negative pair).
            pred: All predictions for the phrase, same format, N >= 0; no score filtering needed.
            scores: ``(N,)`` prediction scores.
            gt_iscrowd: ``(G,)`` crowd flags; crowd GT is dropped, as sam3 does.
            extra_gts: Further GT sets of the same pair (SA-Co/Gold's annotators b and c); the pair is scored
                against the most favourable set.
            extra_gt_iscrowd: Crowd flags for each of ``extra_gts``.
            exhaustive: The pair's ``is_instance_exhaustive`` flag, or one per GT set; the pair is only evaluated
                if all are true.

        Returns:
            self

        Raises:
            ValueError: Repeated ``pair_id``, or shapes/counts that do not agree.
        """
        if pair_id in self._pairs or pair_id in self._skipped:
            raise ValueError(f'pair_id {pair_id!r} was already updated; each image-phrase pair is added once')
        gt_sets = [gt, *extra_gts]
        flags = [exhaustive] if isinstance(exhaustive, (bool, np.bool_)) else list(exhaustive)
        if len(flags) not in (1, len(gt_sets)):
            raise ValueError(f'exhaustive: expected a bool or {len(gt_sets)} bools (one per GT set), got {len(flags)}')
        crowds = [gt_iscrowd, *(extra_gt_iscrowd if extra_gt_iscrowd is not None else [None] * len(extra_gts))]
        if len(crowds) != len(gt_sets):
            raise ValueError(f'extra_gt_iscrowd: expected {len(extra_gts)} entries (one per extra GT set), got '
                             f'{len(crowds) - 1}')
        dt = self._regions(pred, 'pred')
        score_v = np.asarray(scores, dtype=np.float64).reshape(-1)
        score_v = as_vector(score_v, 'scores', len(dt))
        if self.iou_type == 'segm':
            sizes = {s for s in [mask_size(pred)] + [mask_size(g) for g in gt_sets] if s is not None}
            if len(sizes) > 1:
                raise ValueError(f'gt/pred: masks of one pair must share one (H, W), got {sorted(sizes)}')
        if not all(bool(f) for f in flags):
            self._skipped.add(pair_id)
            return self
        evals = []
        for i, (g, c) in enumerate(zip(gt_sets, crowds)):
            name = 'gt' if i == 0 else f'extra_gts[{i - 1}]'
            regions = self._regions(g, name)
            crowd = np.zeros(len(regions), bool) if c is None else as_vector(c, f'{name} iscrowd', len(regions),
                                                                              dtype=bool)
            evals.append(_evaluate_pair(regions, crowd, dt, score_v, self.score_threshold, self.iou_thresholds))
        self._pairs[pair_id] = _select_best(evals)
        return self

    def compute(self) -> CgF1Result:
        """Pools the pairs as sam3's ``CGF1Eval.accumulate`` and ``summarize`` do.

        Returns:
            A :class:`CgF1Result`.

        Raises:
            RuntimeError: No pair was evaluated.
        """
        if not self._pairs:
            raise RuntimeError('no image-phrase pair to evaluate; call update() (with exhaustive=True) first')
        n_t = len(self.iou_thresholds)
        tps, fps, fns, pm_fps = (np.zeros(n_t, np.int64) for _ in range(4))
        local_f1 = np.zeros(n_t, np.float64)
        il = {'TP': 0, 'FP': 0, 'TN': 0, 'FN': 0}
        valid_f1 = 0
        for e in self._pairs.values():
            il[e.il] += 1
            if e.tps is None:
                continue
            tps += e.tps
            fps += e.fps
            fns += e.fns
            if e.positive:
                local_f1 += e.local_f1
                pm_fps += e.fps
                if e.num_dt > 0:
                    valid_f1 += 1
        precision = tps / (tps + fps + 1e-4)
        pm_precision = tps / (tps + pm_fps + 1e-4)
        recall = tps / (tps + fns + 1e-4)
        f1 = 2 * precision * recall / (precision + recall + 1e-4)
        pm_f1 = 2 * pm_precision * recall / (pm_precision + recall + 1e-4)
        il_tp, il_fp, il_tn, il_fn = il['TP'], il['FP'], il['TN'], il['FN']
        il_rec = il_tp / (il_tp + il_fn + 1e-6)
        il_prec = il_tp / (il_tp + il_fp + 1e-6)
        il_mcc = float(il_tp * il_tn - il_fp * il_fn) / (
            (float(il_tp + il_fp) * float(il_tp + il_fn) * float(il_tn + il_fp) * float(il_tn + il_fn)) ** 0.5
            + 1e-6)
        with np.errstate(divide='ignore', invalid='ignore'):
            macro_f1 = local_f1 / valid_f1
        per_t = {'cgF1': pm_f1 * il_mcc, 'precision': precision, 'recall': recall, 'F1': f1,
                 'positive_macro_F1': macro_f1, 'positive_micro_F1': pm_f1,
                 'positive_micro_precision': pm_precision}
        scalars = {'IL_precision': il_prec, 'IL_recall': il_rec,
                   'IL_F1': 2 * il_prec * il_rec / (il_prec + il_rec + 1e-6),
                   'IL_FPR': il_fp / (il_fp + il_tn + 1e-6), 'IL_MCC': il_mcc}

        def summarize(values: np.ndarray, thr: float | None) -> float:
            s = values if thr is None else values[np.where(thr == self.iou_thresholds)[0]]
            s = s[s > -1]
            return float(np.mean(s)) if len(s) else -1.0

        stats = {}
        for name, image_level, thr in SAM3_STAT_NAMES:
            key = f'cgF1_eval_{self.iou_type}_{name}' + ('' if thr is None else f'@{thr}')
            stats[key] = float(scalars[name]) if image_level else summarize(per_t[name], thr)
        pre = f'cgF1_eval_{self.iou_type}_'
        return CgF1Result(
            cgf1=stats[pre + 'cgF1'] * 100, il_mcc=stats[pre + 'IL_MCC'], pmf1=stats[pre + 'positive_micro_F1'] * 100,
            cgf1_50=stats[pre + 'cgF1@0.5'] * 100, cgf1_75=stats[pre + 'cgF1@0.75'] * 100,
            score_threshold=self.score_threshold, iou_type=self.iou_type, num_pairs=len(self._pairs),
            num_skipped=len(self._skipped), il_counts=il, iou_thresholds=self.iou_thresholds.copy(), tp=tps,
            fp=fps, fn=fns, positive_micro_fp=pm_fps, sam3_stats=stats)
