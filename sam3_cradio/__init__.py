"""sam3-cradio: NVIDIA's C-RADIOv4 as the image backbone of Meta's SAM3."""
from .adaptors import RadioOutput
from .cradio import CRadioEncoder, create_cradio, load_cradio, save_cradio


def __getattr__(name: str):
    # SAM3 pulls in hydra, sam3 and its dependencies: import it only when asked for
    if name in ('build_sam3', 'build_sam3_video_predictor'):
        from . import build
        return getattr(build, name)
    if name in ('Sam3ImagePredictor', 'Sam3Result'):
        from . import predictor
        return getattr(predictor, name)
    if name == 'Sam3VideoPredictor':
        from .video import Sam3VideoPredictor
        return Sam3VideoPredictor
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

__version__ = '0.1.0'

__all__ = ['CRadioEncoder', 'RadioOutput', 'create_cradio', 'load_cradio', 'save_cradio', 'build_sam3', 'build_sam3_video_predictor',
           'Sam3ImagePredictor', 'Sam3Result', 'Sam3VideoPredictor', '__version__']
