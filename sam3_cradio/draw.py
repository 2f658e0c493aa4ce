"""Drawing results with supervision's annotators: masks, boxes and labels on an RGB image.

:func:`draw_detections` draws any ``supervision.Detections`` (``Sam3Result.to_detections()``,
``VideoFrameResult.to_detections()``); :func:`annotate` takes the arrays directly, for callers that have no
Detections at hand.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv

__all__ = ['draw_detections', 'default_labels', 'annotate']


def default_labels(detections: sv.Detections) -> list[str]:
    """One label per detection: ``'<class_name> 0.87'`` when the detections carry class names, else
    ``'#<tracker_id> 0.87'`` when they carry tracker ids, else ``'#<index> 0.87'`` (the score left out when there is
    none)."""
    n = len(detections)
    if 'class_name' in detections.data:
        names = [str(x) for x in detections.data['class_name']]
    elif detections.tracker_id is not None:
        names = [f'#{int(i)}' for i in detections.tracker_id]
    else:
        names = [f'#{i}' for i in range(n)]
    if detections.confidence is None:
        return names
    return [f'{name} {float(s):.2f}' for name, s in zip(names, detections.confidence)]


def draw_detections(image: np.ndarray, detections: sv.Detections, labels: Sequence[str] | None = None,
                    opacity: float = 0.45) -> np.ndarray:
    """Draw detections (masks when they have them, boxes, labels) on an (H, W, 3) uint8 RGB image; returns a new
    image.

    Colours follow ``tracker_id`` when the detections have one (an object keeps its colour across video frames),
    else the detection's index. ``labels`` default to :func:`default_labels`.
    """
    import supervision as sv

    scene = np.ascontiguousarray(np.array(image, copy=True))
    n = len(detections)
    if n == 0:
        return scene
    labels = default_labels(detections) if labels is None else list(labels)
    if len(labels) != n:
        raise ValueError(f'{len(labels)} labels for {n} detections; give one label per detection')
    lookup = sv.ColorLookup.TRACK if detections.tracker_id is not None else sv.ColorLookup.INDEX
    if detections.mask is not None:
        scene = sv.MaskAnnotator(opacity=opacity, color_lookup=lookup).annotate(scene, detections)
    scene = sv.BoxAnnotator(thickness=2, color_lookup=lookup).annotate(scene, detections)
    return sv.LabelAnnotator(text_scale=0.5, color_lookup=lookup).annotate(scene, detections, labels=labels)


def annotate(
        image: np.ndarray,
        masks: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray | None = None,
        labels: Sequence[str] | None = None,
        ids: np.ndarray | None = None,
) -> np.ndarray:
    """Draw N detections given as arrays on an (H, W, 3) uint8 RGB image; returns a new image.

    Args:
        masks: (N, H, W) bool. boxes: (N, 4) xyxy pixels. scores: (N,). labels: N strings (default
            ``'#<id> <score>'``). ids: (N,) object ids; colours follow ids so an object keeps its colour across video
            frames (default: 0..N-1).
    """
    import supervision as sv

    n = len(boxes)
    if n == 0:
        return np.ascontiguousarray(np.array(image, copy=True))
    ids = np.arange(n) if ids is None else np.asarray(ids, dtype=int)
    detections = sv.Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(n, 4),
        mask=np.asarray(masks, dtype=bool),
        confidence=None if scores is None else np.asarray(scores, dtype=np.float32),
        class_id=ids,
        tracker_id=ids,
    )
    return draw_detections(image, detections, labels)
