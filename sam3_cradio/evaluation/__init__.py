"""Shared machinery of the benchmark runners in ``eval/``: sharded, resumable prediction loops and the dataset
layouts they read. The metrics themselves live in :mod:`sam3_cradio.metrics`.

- :mod:`.runner`: shard over torchrun ranks, stream one JSON record per unit to disk, resume, merge once, report.
- :mod:`.datasets`: COCO, SA-Co/Gold, DAVIS 2017 and SA-V layouts, checked before any model is built.
- :mod:`.masks`: masks as JSON-safe COCO RLE.
- :mod:`.vos`: semi-supervised VOS (first-frame masks) with sam3's tracker.
- :mod:`.features`: C-RADIO vs PE feature fidelity.
"""
from .datasets import DatasetError
from .runner import EvalSpec, InjectedCrash, RecordStore, Report, run_eval

__all__ = ['DatasetError', 'EvalSpec', 'InjectedCrash', 'RecordStore', 'Report', 'run_eval']
