"""The C-RADIO trunk adapter: what SAM3's ViT trunk returns to its neck, computed by a C-RADIO encoder.

SAM3's neck (``sam3/model/necks.py``) reads ``trunk.channel_list[-1]`` and calls ``trunk(images)`` expecting a
list whose last entry is an NCHW map; it uses only that entry. This is the one place where SAM3's input
normalisation is converted to C-RADIO's. No resizing, autocast or grad policy here: callers choose those.
"""
from __future__ import annotations

import torch
from torch import nn

from .cradio import VARIANTS, CRadioEncoder, create_cradio, load_cradio, resolve_release_name

__all__ = ['CRadioTrunk', 'create_cradio_trunk', 'check_input_size']


class CRadioTrunk(nn.Module):
    """SAM3 trunk contract on a C-RADIO encoder's adaptor features.

    ``forward(x)`` takes SAM3's input, (B, 3, H, W) normalised with mean = std = 0.5 (values in [-1, 1]), and
    returns ``[features]`` with features (B, C, H / patch, W / patch) from the ``adaptor`` head (``sam3``:
    C = 1024 for the releases, the width of SAM3's own PE trunk).
    """

    def __init__(self, encoder: CRadioEncoder, adaptor: str = 'sam3') -> None:
        super().__init__()
        if adaptor not in encoder.adaptors:
            raise ValueError(f'the encoder has no {adaptor!r} adaptor loaded; loaded: {encoder.adaptor_names}')
        head = encoder.arch.teacher(adaptor).feature_head
        if head.upsample_factor != 1:
            raise ValueError(
                f'adaptor {adaptor!r} upsamples its features x{head.upsample_factor}; SAM3 needs one token per patch')
        self.encoder = encoder
        self.adaptor = adaptor
        self.channel_list: list[int] = [head.out_dim]
        # Inside a SAM3 model every size downstream (decoder coordinates, position encodings, mask sizes) follows one
        # input side; build_sam3 sets it so that another size fails here instead of giving silently wrong masks.
        self.image_size: int | None = None

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input_size(x, self.image_size, 'this SAM3 model was built',
                         'or build the model for that size (build_sam3(..., resolution=...))')
        # SAM3 normalises RGB p in [0, 1] as (p - 0.5) / 0.5; invert exactly to hand C-RADIO its own [0, 1] input,
        # which its input conditioner then normalises with the checkpoint's mean and std.
        rgb = x * 0.5 + 0.5
        return [self.encoder.forward_adaptor_features(rgb, self.adaptor, feature_fmt='NCHW')]


def check_input_size(x: torch.Tensor, image_size: int | None, what: str, remedy: str) -> None:
    """Refuse a trunk input of another side than ``image_size`` (None: any), naming the Sam3Processor fix."""
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        raise ValueError(
            f'{what} for {image_size} x {image_size} px inputs, got {x.shape[-2]} x {x.shape[-1]}. sam3\'s '
            f'Sam3Processor resizes to 1008 px unless told otherwise: use Sam3Processor(model, resolution={image_size}) '
            f'(model.image_size holds the size), {remedy}')


def create_cradio_trunk(
        variant: str,
        checkpoint: str | None = None,
        window_size: int | None = None,
        adaptor: str = 'sam3',
        pretrained: bool = True,
) -> CRadioTrunk:
    """Build the trunk: from ``checkpoint`` if given, else the release ``variant``'s weights when ``pretrained``,
    else random weights of the variant's architecture (tests, benchmarks)."""
    if checkpoint is not None:
        encoder = load_cradio(checkpoint, adaptor_names=[adaptor], window_size=window_size)
    elif pretrained:
        if resolve_release_name(variant) is None:
            raise ValueError(
                f'{variant!r} has no released weights; pass a checkpoint path or pretrained=False '
                f'(known variants: {sorted(VARIANTS)})')
        encoder = load_cradio(variant, adaptor_names=[adaptor], window_size=window_size)
    else:
        encoder = create_cradio(variant, adaptor_names=(adaptor,), window_size=window_size)
    return CRadioTrunk(encoder, adaptor)
