"""Small files shipped in the wheel for the ``--tiny`` modes and the encoder check, so that nothing in the package
reads a source checkout.

* ``cradio_tiny/``: NVIDIA's tiny C-RADIO fixture (192 wide, 8 blocks, made by NVIDIA's own code): the checkpoint in
  the released layout (``model.pth.tar``), reference outputs (``reference.safetensors``, ``cases.json``) and
  their README.
* ``images/``: two example photos (scikit-image's astronaut and coffee, public domain).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ['ASSETS_DIR', 'CRADIO_TINY_DIR', 'CRADIO_TINY_CHECKPOINT', 'EXAMPLE_IMAGES_DIR', 'example_images']

ASSETS_DIR = Path(__file__).resolve().parent
CRADIO_TINY_DIR = ASSETS_DIR / 'cradio_tiny'
CRADIO_TINY_CHECKPOINT = CRADIO_TINY_DIR / 'model.pth.tar'
EXAMPLE_IMAGES_DIR = ASSETS_DIR / 'images'


def example_images() -> list[Path]:
    """The example photos, sorted by name."""
    return sorted(EXAMPLE_IMAGES_DIR.glob('*.jpg'))
