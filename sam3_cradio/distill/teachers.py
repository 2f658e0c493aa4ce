"""Frozen distillation teachers: SAM3's Perception Encoder (dense features) and any C-RADIO adaptor's targets.

A teacher maps a (B, 3, H, W) RGB batch in [0, 1] at :meth:`input_size` to a :class:`TeacherTarget`. Teachers are
frozen (``requires_grad=False``, eval mode); the trainer calls them under ``torch.no_grad()``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..cradio import CRadioEncoder, load_cradio

_logger = logging.getLogger(__name__)

__all__ = ['TeacherTarget', 'PETeacher', 'CRadioTeacher', 'freeze']


class TeacherTarget(NamedTuple):
    """summary: (B, C_s) or None (PE has none); features: (B, C, h, w) float32."""
    summary: Optional[torch.Tensor]
    features: torch.Tensor


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad=False everywhere and eval mode (also after a later ``.train()`` of a parent: it has none)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class PETeacher(nn.Module):
    """SAM3's Perception Encoder trunk (``sam3.model.vitdet.ViT``, patch 14) as a dense teacher.

    The trunk's RoPE tables fix its input to ``image_size`` x ``image_size``; every view is resized to that. Input
    is converted from [0, 1] to SAM3's normalisation ``(x - 0.5) / 0.5`` here, the one place this happens.
    """

    has_summary = False

    def __init__(self, trunk: nn.Module, image_size: int, patch_size: int = 14) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f'PE image_size {image_size} is not a multiple of its patch size {patch_size}')
        self.trunk = freeze(trunk)
        self.image_size = image_size
        self.patch_size = patch_size

    def input_size(self, height: int, width: int) -> Tuple[int, int]:
        return (self.image_size, self.image_size)

    def train(self, mode: bool = True) -> 'PETeacher':
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor) -> TeacherTarget:
        out = self.trunk((x - 0.5) / 0.5)
        return TeacherTarget(None, out[-1].float())

    @classmethod
    def from_config(cls, overrides: Sequence[str] = (), device: Union[str, torch.device, None] = None) -> 'PETeacher':
        """A PE trunk with random weights from ``configs/sam3_pe.yaml`` plus hydra ``overrides`` (tiny teachers)."""
        from hydra.utils import instantiate

        from .. import compat
        from ..build import compose_config

        cfg = compose_config('pe', list(overrides))
        compat.apply_cpu_shims()
        trunk = instantiate(cfg.trunk, _convert_='all')
        return cls(trunk, int(cfg.backbone.image_size), int(cfg.backbone.patch_size)).to(device or 'cpu')

    @classmethod
    def from_sam3(
            cls,
            sam3_checkpoint: Optional[Union[str, Path]] = None,
            image_size: int = 1008,
            pretrained: bool = True,
            device: Union[str, torch.device, None] = None,
    ) -> 'PETeacher':
        """SAM3's own PE with sam3.pt weights, through ``build_sam3('pe')`` (HF ``facebook/sam3`` by default)."""
        from ..build import build_sam3

        model = build_sam3('pe', mode='image', pretrained=pretrained, sam3_checkpoint=sam3_checkpoint,
                           interactive=False, device=device or 'cpu',
                           overrides=[f'backbone.image_size={image_size}'])
        trunk = model.backbone.vision_backbone.trunk
        patch = int(model.sam3_cradio_cfg['patch_size'])
        del model
        return cls(trunk, image_size, patch)


class CRadioTeacher(nn.Module):
    """A frozen C-RADIO encoder whose adaptor ``name`` gives the targets (its summary and NCHW features)."""

    has_summary = True

    def __init__(self, encoder: CRadioEncoder, adaptor: str) -> None:
        super().__init__()
        if adaptor not in encoder.adaptors:
            raise ValueError(f'teacher adaptor {adaptor!r} is not loaded; loaded: {encoder.adaptor_names}')
        self.encoder = freeze(encoder)
        self.adaptor = adaptor
        self.patch_size = encoder.patch_size

    def input_size(self, height: int, width: int) -> Tuple[int, int]:
        return self.encoder.nearest_supported_resolution(height, width)

    def train(self, mode: bool = True) -> 'CRadioTeacher':
        return super().train(False)

    def forward(self, x: torch.Tensor) -> TeacherTarget:
        out = self.encoder(x, feature_fmt='NCHW')[self.adaptor]
        return TeacherTarget(out.summary.float(), out.features.float())

    @classmethod
    def from_checkpoint(cls, source: Union[str, Path], adaptor: str, window_size: Optional[int] = None,
                        device: Union[str, torch.device, None] = None) -> 'CRadioTeacher':
        return cls(load_cradio(source, adaptor_names=[adaptor], window_size=window_size, device=device), adaptor)
