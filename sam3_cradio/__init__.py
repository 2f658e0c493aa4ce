"""sam3-cradio: NVIDIA's C-RADIOv4 as the image backbone of Meta's SAM3."""
from __future__ import annotations

from ._lazy import lazy_getattr

__version__ = '0.1.0'

# Everything is imported on first use: `import sam3_cradio` (and so the `sam3-cradio` command's start-up, during
# which Ctrl-C would otherwise end in an import traceback) stays free of torch, timm and sam3 until they are needed.
_LAZY = {
    'RadioOutput': 'adaptors',
    'CRadioEncoder': 'cradio', 'create_cradio': 'cradio', 'load_cradio': 'cradio', 'save_cradio': 'cradio',
    'build_sam3': 'build', 'build_sam3_video_predictor': 'build',
    'Sam3ImagePredictor': 'predictor', 'Sam3Result': 'predictor', 'TextTruncatedWarning': 'predictor',
    'text_overflow': 'predictor',
    'Sam3VideoPredictor': 'video',
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [*_LAZY, '__version__']
