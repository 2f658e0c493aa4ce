"""Jobs over many images: ``sam3-cradio segment`` on files, folders, globs and lists of paths.

- :func:`iter_segment`: a generator over ``(path, Sam3Result)``, images decoded in DataLoader workers and
  batched through the trunk.
- :func:`segment_to_files`: the same as a resumable, sharded job (the evaluation runner's records, lock and
  Ctrl-C handling) writing COCO JSON, per-image JSON, PNG instance masks, YOLO, Pascal VOC and annotated images
  (:mod:`.formats`).
- :func:`collect_images`: which images, in which order, under which names.
"""
from __future__ import annotations

from .._lazy import lazy_getattr

# Imported on first use: the command line reads the options of a command without loading torch.
_LAZY = {
    'FORMATS': 'formats',
    'record_to_result': 'formats',
    'result_to_record': 'formats',
    'ImageList': 'inputs',
    'collect_images': 'inputs',
    'Prompts': 'segment',
    'iter_segment': 'segment',
    'segment_to_files': 'segment',
    'TrackSummary': 'track',
    'track_video': 'track',
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY)
