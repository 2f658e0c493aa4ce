"""Semi-supervised video object segmentation (masks given on the first frame) with sam3's tracker.

SAM2's protocol (``tools/vos_inference.py``): every object's first-frame mask goes in with ``add_new_mask``, then
one forward ``propagate_in_video`` over the whole video; an output pixel belongs to an object where its mask
logit is > 0. :meth:`~sam3_cradio.video.Sam3VideoPredictor.add_mask` is that ``add_new_mask``: it runs sam3's
tracker alone on features from the shared backbone's SAM2-style neck, reading a frame only when the tracker asks
for it and keeping the features of the last two.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ['track_from_first_masks']


def track_from_first_masks(
        model: torch.nn.Module,
        frames: Sequence[Path],
        first_masks: dict[int, np.ndarray],
        non_overlap: bool = True,
) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """Track objects given by their first-frame masks through ``frames``.

    Args:
        model: a video model from ``build_sam3(..., mode='video')``.
        frames: frame image paths, in order.
        first_masks: object id -> (H, W) bool mask on frame 0, at the frames' resolution (an empty mask is allowed:
            the object is tracked from nothing, as SAM2's evaluation does).
        non_overlap: make objects' masks disjoint (each pixel to the highest-scoring object), as for DAVIS' label
            maps; SA-V objects may overlap (SAM2 evaluates SA-V with ``non_overlap_masks=false``).

    Yields:
        ``(frame_idx, {object id: (H, W) bool mask})`` for every frame, in order, every object on every frame.
    """
    from ..video import Sam3VideoPredictor

    cfg = getattr(model, 'sam3_cradio_cfg', None)
    if cfg is None or cfg.get('mode') != 'video':
        raise ValueError('track_from_first_masks needs a video model from build_sam3(..., mode="video")')
    if not first_masks:
        raise ValueError('first_masks is empty: give at least one object mask on frame 0')
    shapes = {np.asarray(m).shape for m in first_masks.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f'first_masks must be (H, W) masks of one size, got shapes {sorted(shapes)}')
    predictor = Sam3VideoPredictor(model, non_overlap_masks=non_overlap)
    predictor.open(list(frames))
    try:
        for obj_id in sorted(first_masks):
            predictor.add_mask(0, int(obj_id), np.asarray(first_masks[obj_id], bool), allow_empty=True)
        for r in predictor.propagate('forward', start_frame=0):
            masks = dict(zip(r.obj_ids.tolist(), r.masks))  # objects empty on this frame are left out of r
            yield r.frame_idx, {int(o): masks[o] if o in masks else np.zeros(predictor.frame_size, bool)
                                for o in sorted(first_masks)}
    finally:
        predictor.close()
