"""Box-prompted mIoU on COCO/LVIS, the protocol of EfficientViT-SAM and EfficientSAM.

Each GT instance's box prompts one mask; the score is the mean IoU of those masks with the GT masks, overall and
by the GT annotation's COCO ``area`` (small / medium / large). Definitions follow mit-han-lab/efficientvit
``applications/efficientvit_sam/sam_eval_utils.py`` (``iou``, ``get_iou_metric``) and
``eval_efficientvit_sam_model.py`` (``run_box``):

- IoU is ``|P & G| / (|P | G| + 1e-7)`` (so two empty masks give 0).
- Instances whose annotation ``area < 1`` are skipped (``run_box``); they are counted in ``num_skipped``.
- Area buckets are closed on both ends, as in ``get_iou_metric`` and pycocotools' ``areaRng``: small is
  ``area <= 32**2``, medium ``32**2 <= area <= 96**2``, large ``area >= 96**2`` (an area of exactly 1024 or 9216
  falls in two buckets).
- The mean is over instances (all images pooled), not per image.

EfficientViT prints IoU x 100; here values are fractions in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._convert import as_binary_mask, as_vector

__all__ = ['BoxPromptMIoUMetric', 'BoxPromptMIoU', 'BoxPromptMIoUResult', 'AREA_RANGES']

#: COCO area ranges (closed intervals, as pycocotools and EfficientViT use them).
AREA_RANGES = {'small': (0.0, 32.0 ** 2), 'medium': (32.0 ** 2, 96.0 ** 2), 'large': (96.0 ** 2, float('inf'))}
_EPS = 1e-7


@dataclass
class BoxPromptMIoUResult:
    """Mean IoU of box-prompted masks, overall and by GT area.

    Attributes:
        miou: Mean IoU over all instances, in [0, 1] (NaN if none).
        miou_small: Mean over instances with ``area <= 32**2`` (NaN if none).
        miou_medium: Mean over ``32**2 <= area <= 96**2`` (NaN if none).
        miou_large: Mean over ``area >= 96**2`` (NaN if none).
        count: Instances evaluated.
        count_small: Instances in the small bucket.
        count_medium: Instances in the medium bucket.
        count_large: Instances in the large bucket.
        num_skipped: Instances skipped for ``area < min_area``.
    """

    miou: float
    miou_small: float
    miou_medium: float
    miou_large: float
    count: int
    count_small: int
    count_medium: int
    count_large: int
    num_skipped: int

    def __str__(self) -> str:
        return '\n'.join([f' Box-prompt mIoU @[ area={area:>6} ] = {v:0.3f}  (n={n})' for area, v, n in (
            ('all', self.miou, self.count), ('small', self.miou_small, self.count_small),
            ('medium', self.miou_medium, self.count_medium), ('large', self.miou_large, self.count_large))])

    def to_dict(self) -> dict[str, float | int]:
        """Returns the fields as a dict (IoUs as fractions; NaN for empty buckets)."""
        return {'miou': self.miou, 'miou_small': self.miou_small, 'miou_medium': self.miou_medium,
                'miou_large': self.miou_large, 'count': self.count, 'count_small': self.count_small,
                'count_medium': self.count_medium, 'count_large': self.count_large,
                'num_skipped': self.num_skipped}


class BoxPromptMIoUMetric:
    """Box-prompted mIoU (EfficientViT-SAM / EfficientSAM protocol), overall and by COCO area range.

    Example:
        >>> metric = BoxPromptMIoUMetric()
        >>> gt = np.zeros((40, 40), bool); gt[:20, :20] = True  # area 400: small
        >>> pred = np.zeros((40, 40), bool); pred[:20, :10] = True  # IoU 0.5
        >>> round(metric.update(gt, pred, area=400).compute().miou_small, 6)
        0.5

    Args:
        min_area: Instances whose GT ``area`` is below this are skipped (EfficientViT's ``run_box`` skips
            ``area < 1``).
    """

    def __init__(self, min_area: float = 1.0) -> None:
        self.min_area = float(min_area)
        self._ious: list[float] = []
        self._areas: list[float] = []
        self._skipped = 0

    def reset(self) -> BoxPromptMIoUMetric:
        """Forgets all instances. Returns self."""
        self._ious, self._areas, self._skipped = [], [], 0
        return self

    def update(self, gt_mask: Any, pred_mask: Any, area: Any) -> BoxPromptMIoUMetric:
        """Adds one instance, or N instances of one image.

        Args:
            gt_mask: ``(H, W)`` or ``(N, H, W)`` bool GT mask(s) (decode COCO RLE/polygons with pycocotools).
            pred_mask: The mask(s) predicted from each GT box, same shape as ``gt_mask``.
            area: The GT annotations' COCO ``area`` (scalar, or ``(N,)``), which picks the size bucket; not the
                mask's pixel count.

        Returns:
            self

        Raises:
            ValueError: Shapes differ, masks are not binary, or the number of areas does not match.
        """
        ndim = np.ndim(gt_mask)
        if ndim not in (2, 3):
            raise ValueError(f'gt_mask: expected (H, W) or (N, H, W), got shape {np.shape(gt_mask)}')
        gt = as_binary_mask(gt_mask, 'gt_mask', ndim)
        pred = as_binary_mask(pred_mask, 'pred_mask', ndim)
        if gt.shape != pred.shape:
            raise ValueError(f'pred_mask: shape {pred.shape} differs from gt_mask {gt.shape}; resize predictions '
                             'to the image size first')
        if ndim == 2:
            gt, pred = gt[None], pred[None]
        areas = as_vector(area, 'area', gt.shape[0])
        inter = np.count_nonzero(gt & pred, axis=(1, 2))
        union = np.count_nonzero(gt | pred, axis=(1, 2))
        ious = inter / (union + _EPS)
        keep = areas >= self.min_area
        self._skipped += int((~keep).sum())
        self._ious.extend(ious[keep].tolist())
        self._areas.extend(areas[keep].tolist())
        return self

    def compute(self) -> BoxPromptMIoUResult:
        """Returns the mean IoU overall and per area bucket."""
        ious = np.asarray(self._ious, dtype=np.float64)
        areas = np.asarray(self._areas, dtype=np.float64)

        def mean_in(lo: float, hi: float) -> tuple:
            sel = (areas >= lo) & (areas <= hi)
            n = int(sel.sum())
            return (float(ious[sel].mean()) if n else float('nan')), n

        (s, ns), (m, nm), (la, nl) = (mean_in(*AREA_RANGES[k]) for k in ('small', 'medium', 'large'))
        return BoxPromptMIoUResult(miou=float(ious.mean()) if ious.size else float('nan'), miou_small=s,
                                   miou_medium=m, miou_large=la, count=int(ious.size), count_small=ns,
                                   count_medium=nm, count_large=nl, num_skipped=self._skipped)


#: The name used in the evaluation plan; same class.
BoxPromptMIoU = BoxPromptMIoUMetric
