"""Evaluation metrics, independent of any model: COCO AP, box-prompted mIoU, SA-Co cgF1 and DAVIS J&F.

Each follows ``update(...)`` (returns self) / ``reset()`` / ``compute()`` and returns a dataclass result with a
short pycocotools-style ``__str__`` and ``to_dict()``.
"""
from .box_prompt import BoxPromptMIoU, BoxPromptMIoUMetric, BoxPromptMIoUResult
from .cgf1 import CgF1Metric, CgF1Result, average_cgf1
from .coco import CocoMetric, CocoResult
from .davis import DavisMetric, DavisResult

__all__ = ['BoxPromptMIoU', 'BoxPromptMIoUMetric', 'BoxPromptMIoUResult', 'CgF1Metric', 'CgF1Result',
           'CocoMetric', 'CocoResult', 'DavisMetric', 'DavisResult', 'average_cgf1']
