"""Masks in records: COCO run-length encoding with ``str`` counts (JSON-safe), and GT segmentations to RLE.

Example:
    >>> m = np.zeros((2, 4, 5), bool); m[0, 1:3, 1:4] = True
    >>> rles = encode_masks(m)
    >>> rles[0]['size'], decode_masks(rles, (4, 5)).sum()
    ([4, 5], 6)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

__all__ = ['encode_masks', 'decode_masks', 'segmentation_to_rle']

Rle = dict[str, Any]


def encode_masks(masks: np.ndarray) -> list[Rle]:
    """``(N, H, W)`` bool masks -> N compressed RLEs ``{'size': [H, W], 'counts': str}``."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f'masks: expected (N, H, W), got shape {masks.shape}')
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{'size': [int(s) for s in r['size']], 'counts': r['counts'].decode('ascii')} for r in rles]


def decode_masks(rles: Sequence[Rle], size: tuple[int, int]) -> np.ndarray:
    """N RLEs -> ``(N, H, W)`` bool (``(0, H, W)`` for none)."""
    if not rles:
        return np.zeros((0, *size), bool)
    return mask_utils.decode([dict(r) for r in rles]).transpose(2, 0, 1).astype(bool)


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> Rle:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> one compressed RLE, str counts."""
    if isinstance(segmentation, list):  # polygons
        if not segmentation:
            rle = mask_utils.encode(np.zeros((height, width, 1), np.uint8, order='F'))[0]
        else:
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and 'counts' in segmentation:
        if isinstance(segmentation['counts'], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation)
    else:
        raise ValueError(f'segmentation: expected polygons or an RLE dict, got {type(segmentation).__name__}')
    counts = rle['counts']
    return {'size': [int(s) for s in rle['size']], 'counts': counts.decode('ascii') if isinstance(counts, bytes)
            else counts}
