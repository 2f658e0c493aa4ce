"""Input checks and conversions shared by the metrics: masks to COCO RLE, xyxy boxes to xywh, binary masks.

Private to ``sam3_cradio.metrics``; every function raises a ``ValueError`` that names the argument, what was
expected and what was given.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

__all__ = ['MaskLike', 'to_rles', 'mask_size', 'xyxy_to_xywh', 'as_vector', 'as_binary_mask']

Rle = dict[str, Any]
MaskLike = np.ndarray | Sequence[Rle]


def _is_rle_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(r, dict) for r in x)


def as_binary_mask(x: Any, name: str, ndim: int) -> np.ndarray:
    """Returns ``x`` as a bool array with ``ndim`` dimensions.

    Args:
        x: Array-like of bool or integer 0/1 values (a CPU torch tensor works too).
        name: Argument name used in error messages.
        ndim: Required number of dimensions (2 for ``(H, W)``, 3 for ``(N, H, W)``/``(T, H, W)``).

    Returns:
        The mask as ``np.bool_``.

    Raises:
        ValueError: Wrong number of dimensions, or float/non-binary values.
    """
    try:
        a = np.asarray(x)
    except Exception as e:  # e.g. a CUDA tensor
        raise ValueError(f'{name}: expected a numpy array (or CPU tensor), got {type(x).__name__} ({e})') from None
    if a.ndim != ndim:
        shape = '(H, W)' if ndim == 2 else '(N, H, W)'
        raise ValueError(f'{name}: expected a {shape} mask array, got shape {a.shape}')
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f'{name}: expected binary values 0/1, got values in [{a.min()}, {a.max()}]; '
                             'pass (mask == label) for label maps')
        return a.astype(bool)
    raise ValueError(f'{name}: expected a bool (or 0/1 integer) mask, got dtype {a.dtype}; '
                     'threshold scores or logits first, e.g. masks > 0')


def to_rles(masks: MaskLike, name: str, size: tuple[int, int] | None = None) -> list[Rle]:
    """Converts ``(N, H, W)`` binary masks or a list of COCO RLEs to compressed RLEs.

    Args:
        masks: ``(N, H, W)`` bool array, or a list of COCO RLE dicts ``{'size': [H, W], 'counts': ...}``
            (compressed ``str``/``bytes`` counts, or uncompressed ``list`` counts).
        name: Argument name used in error messages.
        size: Expected ``(H, W)``, if known.

    Returns:
        One compressed RLE per mask, in order.

    Example:
        >>> rles = to_rles(np.ones((1, 2, 3), bool), 'masks')
        >>> rles[0]['size'], mask_utils.area(rles).tolist()
        ([2, 3], [6])
    """
    if _is_rle_list(masks):
        out = []
        for i, r in enumerate(masks):
            if 'size' not in r or 'counts' not in r:
                raise ValueError(f'{name}[{i}]: expected a COCO RLE dict with "size" and "counts", got keys '
                                 f'{sorted(r)}')
            h, w = (int(v) for v in r['size'])
            if size is not None and (h, w) != tuple(size):
                raise ValueError(f'{name}[{i}]: RLE size is {h}x{w}, expected {size[0]}x{size[1]} (H x W)')
            if isinstance(r['counts'], list):
                r = mask_utils.frPyObjects(r, h, w)
            out.append(r)
        return out
    a = as_binary_mask(masks, name, 3)
    if size is not None and a.shape[1:] != tuple(size):
        raise ValueError(f'{name}: masks are {a.shape[1]}x{a.shape[2]}, expected {size[0]}x{size[1]} (H x W); '
                         'predictions must be in the original image resolution')
    if a.shape[0] == 0:
        return []
    return mask_utils.encode(np.asfortranarray(a.transpose(1, 2, 0).astype(np.uint8)))


def mask_size(masks: MaskLike) -> tuple[int, int] | None:
    """Returns ``(H, W)`` of an ``(N, H, W)`` array or of the first RLE, or ``None`` for an empty list."""
    if _is_rle_list(masks):
        return tuple(int(v) for v in masks[0]['size']) if len(masks) else None
    a = np.asarray(masks)
    return tuple(a.shape[1:3]) if a.ndim == 3 else None


def xyxy_to_xywh(boxes: Any, name: str, n: int | None = None) -> np.ndarray:
    """Converts ``(N, 4)`` pixel boxes ``x1, y1, x2, y2`` to COCO ``x, y, w, h``.

    Example:
        >>> xyxy_to_xywh([[10, 20, 15, 30]], 'boxes').tolist()
        [[10.0, 20.0, 5.0, 10.0]]
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f'{name}: expected (N, 4) xyxy boxes, got shape {b.shape}')
    if n is not None and b.shape[0] != n:
        raise ValueError(f'{name}: expected {n} boxes (one per mask/score), got {b.shape[0]}')
    if not np.isfinite(b).all():
        raise ValueError(f'{name}: boxes hold NaN or infinite values')
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f'{name}: expected x2 >= x1 and y2 >= y1 (xyxy pixel boxes), got e.g. '
                         f'{b[(b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])][0].tolist()}')
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def as_vector(x: Any, name: str, n: int, dtype: type = np.float64) -> np.ndarray:
    """Returns ``x`` as a 1-D array of length ``n``; a scalar is broadcast."""
    a = np.asarray(x, dtype=dtype)
    if a.ndim == 0:
        a = np.full(n, a, dtype=dtype)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f'{name}: expected a scalar or {n} values (one per mask/box), got shape {a.shape}')
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError(f'{name}: holds NaN or infinite values')
    return a
