"""The demo's options (:class:`DemoOptions`), checked against the backbone registry before anything loads; the
command line that makes them is :mod:`sam3_cradio.commands.demo`."""
from __future__ import annotations

from dataclasses import dataclass, field

from sam3_cradio.registry import DEFAULT_BACKBONE, Backbone, ModelSpec, get_backbone, list_backbones

__all__ = ['DEFAULT_BACKBONE', 'TINY_BACKBONE', 'DemoOptions', 'demo_backbones']

# --tiny: the C-RADIO of the shipped test fixture under random SAM3 weights (no download)
TINY_BACKBONE = 'cradio_tiny'


def demo_backbones(tiny: bool) -> list[Backbone]:
    """The backbones offered in the page: every one with released weights, and the tiny one with ``--tiny``."""
    offered = [get_backbone(n) for n in list_backbones(pretrained_only=True)]
    return [get_backbone(TINY_BACKBONE), *offered] if tiny else offered


@dataclass(frozen=True)
class DemoOptions:
    """What the demo serves and how; made and checked by :func:`sam3_cradio.commands.demo.demo_options`.

    ``spec`` is the model selected when the page opens, ``backbones`` the names offered in the page,
    ``cradio_checkpoints`` {backbone name: local C-RADIO file}. The rest are the limits and server settings of
    ``sam3-cradio demo --help``.
    """

    spec: ModelSpec
    backbones: list[str]
    tiny: bool = False
    sam3_checkpoint: str | None = None
    cradio_checkpoints: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    dtype: str = 'fp32'
    trunk_runtime: str | None = None
    trunk_model: str | None = None
    host: str = '127.0.0.1'
    port: int = 7860
    share: bool = False
    threshold: float = 0.5
    max_image_side: int = 2048
    max_image_megapixels: float = 100.0
    max_video_frames: int = 240
    max_video_side: int = 1280
    max_file_size: str = '500mb'
    max_models: int = 3
    feature_cache: int = 4
    concurrency: int = 2
    preload: bool = True

    @property
    def backbone(self) -> str:
        return self.spec.name
