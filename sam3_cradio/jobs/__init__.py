"""Jobs over many images: ``sam3-cradio segment`` on files, folders, globs and lists of paths.

- :func:`iter_segment`: a generator over ``(path, Sam3Result)``, images decoded in DataLoader workers and
  batched through the trunk.
- :func:`segment_to_files`: the same as a resumable, sharded job (the evaluation runner's records, lock and
  Ctrl-C handling) writing COCO JSON, per-image JSON, PNG instance masks, YOLO, Pascal VOC and annotated images
  (:mod:`.formats`).
- :func:`collect_images`: which images, in which order, under which names.
"""
from .formats import FORMATS, record_to_result, result_to_record
from .inputs import ImageList, collect_images
from .segment import Prompts, iter_segment, segment_to_files

__all__ = ['FORMATS', 'ImageList', 'Prompts', 'collect_images', 'iter_segment', 'record_to_result',
           'result_to_record', 'segment_to_files']
