"""The evaluations (``sam3-cradio eval NAME``): sharded, resumable prediction loops, the dataset layouts they read
and one command per benchmark. The metrics themselves live in :mod:`sam3_cradio.metrics`.

- :mod:`.commands`: ``sam3-cradio eval coco|coco-boxes|saco-gold|vos|features``, one module each.
- :mod:`.runner`: shard over torchrun ranks, stream one JSON record per unit to disk, resume, merge once, report
  (``docs/evaluation.md``); model options resolved through :mod:`sam3_cradio.registry`.
- :mod:`.datasets`: COCO, SA-Co/Gold, DAVIS 2017 and SA-V layouts, checked before any model is built.
- :mod:`.masks`: masks as JSON-safe COCO RLE.
- :mod:`.vos`: semi-supervised VOS (first-frame masks) with sam3's tracker.
- :mod:`.features`: C-RADIO vs PE feature fidelity.
"""
from __future__ import annotations

from .._lazy import lazy_getattr

# Imported on first use: the command line reads the options of a command without loading torch.
_LAZY = {
    'DatasetError': 'datasets',
    'EvalSpec': 'runner',
    'InjectedCrash': 'runner',
    'RecordStore': 'runner',
    'Report': 'runner',
    'run_eval': 'runner',
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY)
