"""Drawing results with supervision's annotators: masks, boxes and labels on an RGB image."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ['annotate']


def annotate(
        image: np.ndarray,
        masks: np.ndarray,
        boxes: np.ndarray,
        scores: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None,
        ids: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Draw N detections on an (H, W, 3) uint8 RGB image; returns a new image.

    Args:
        masks: (N, H, W) bool. boxes: (N, 4) xyxy pixels. scores: (N,). labels: N strings (default: the scores).
        ids: (N,) object ids; colours follow ids so an object keeps its colour across video frames.
    """
    import supervision as sv

    n = len(boxes)
    scene = np.ascontiguousarray(image.copy())
    if n == 0:
        return scene
    ids = np.arange(n) if ids is None else np.asarray(ids, dtype=int)
    detections = sv.Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(n, 4),
        mask=np.asarray(masks, dtype=bool),
        confidence=None if scores is None else np.asarray(scores, dtype=np.float32),
        class_id=ids,
        tracker_id=ids,
    )
    if labels is None:
        labels = [f'#{i} {s:.2f}' if scores is not None else f'#{i}' for i, s in
                  zip(ids, scores if scores is not None else [0] * n)]
    lookup = sv.ColorLookup.TRACK
    scene = sv.MaskAnnotator(opacity=0.45, color_lookup=lookup).annotate(scene, detections)
    scene = sv.BoxAnnotator(thickness=2, color_lookup=lookup).annotate(scene, detections)
    scene = sv.LabelAnnotator(text_scale=0.5, color_lookup=lookup).annotate(scene, detections, labels=list(labels))
    return scene
