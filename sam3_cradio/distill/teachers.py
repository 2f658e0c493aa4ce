"""Frozen distillation teachers: SAM3's Perception Encoder (dense features) and any C-RADIO adaptor's targets.

A teacher maps a (B, 3, H, W) RGB batch in [0, 1] at :meth:`input_size` to a :class:`TeacherTarget`. Teachers are
frozen (``requires_grad=False``, eval mode); the trainer calls them under ``torch.no_grad()``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..cradio import CRadioEncoder, load_cradio

_logger = logging.getLogger(__name__)

__all__ = ['TeacherTarget', 'PETeacher', 'CRadioTeacher', 'freeze']


class TeacherTarget(NamedTuple):
    """summary: (B, C_s) or None (PE has none); features: (B, C, h, w) float32."""
    summary: torch.Tensor | None
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

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    def train(self, mode: bool = True) -> PETeacher:
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor) -> TeacherTarget:
        out = self.trunk((x - 0.5) / 0.5)
        return TeacherTarget(None, out[-1].float())

    @classmethod
    def from_config(
            cls,
            backbone: str = 'pe',
            image_size: int | None = None,
            overrides: Sequence[str] = (),
            device: str | torch.device | None = None,
    ) -> PETeacher:
        """A PE trunk with random weights through :func:`~sam3_cradio.build.build_trunk` (the function the benchmark
        builds PE with): a registered PE backbone ('pe', 'pe_tiny') at ``image_size`` px (default: its native
        size), with hydra ``overrides`` of its trunk numbers (``trunk.depth=2`` for a tiny teacher). Its window is
        the registry's; an override of it is refused."""
        from ..build import build_trunk
        from ..registry import resolve

        spec = resolve(backbone, resolution=image_size)
        if spec.backbone.is_cradio:
            raise ValueError(f"a PE teacher needs a PE backbone such as 'pe' or 'pe_tiny', got {spec.name!r}; "
                             f"C-RADIO teachers are kind 'cradio'")
        trunk = build_trunk(spec, overrides, device=device)
        return cls(trunk, spec.resolution, spec.backbone.patch_size)

    @classmethod
    def from_sam3(
            cls,
            sam3_checkpoint: str | Path | None = None,
            image_size: int | None = None,
            pretrained: bool = True,
            device: str | torch.device | None = None,
    ) -> PETeacher:
        """SAM3's own PE with sam3.pt weights, through ``build_sam3('pe')`` (HF ``facebook/sam3`` by default), at
        ``image_size`` px (default: its native 1008)."""
        from ..build import build_sam3

        model = build_sam3('pe', mode='image', resolution=image_size, pretrained=pretrained,
                           sam3_checkpoint=sam3_checkpoint, interactive=False, device=device or 'cpu')
        spec = model.sam3_cradio_spec
        trunk = model.backbone.vision_backbone.trunk
        del model
        return cls(trunk, spec.resolution, spec.backbone.patch_size)


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

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return self.encoder.nearest_supported_resolution(height, width)

    def train(self, mode: bool = True) -> CRadioTeacher:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> TeacherTarget:
        out = self.encoder(x, feature_fmt='NCHW')[self.adaptor]
        return TeacherTarget(out.summary.float(), out.features.float())

    @classmethod
    def from_checkpoint(cls, source: str | Path, adaptor: str, window_size: int | None = None,
                        device: str | torch.device | None = None) -> CRadioTeacher:
        return cls(load_cradio(source, adaptor_names=[adaptor], window_size=window_size, device=device), adaptor)
