"""sam3-cradio: NVIDIA's C-RADIOv4 as the image backbone of Meta's SAM3."""
from .adaptors import RadioOutput
from .cradio import CRadioEncoder, create_cradio, load_cradio, save_cradio

__version__ = '0.1.0'

__all__ = ['CRadioEncoder', 'RadioOutput', 'create_cradio', 'load_cradio', 'save_cradio', '__version__']
