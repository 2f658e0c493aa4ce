"""Feature fidelity: how close C-RADIO's ``sam3`` adaptor features are to SAM3's own Perception Encoder features.

Both encoders see the whole image resized to their square input, exactly as ``Sam3Processor`` feeds them (PE:
1008 px, patch 14; C-RADIOv4: 1152 px, patch 16; both 72 x 72 tokens), so token (i, j) covers the same part of
the image in both maps and they compare position by position.

Grid rule: when the two token grids differ (the tiny test models, or another C-RADIO input size: ``eval features
--resolutions``, ``backbone.image_size``), both maps are resampled to the smaller grid, bilinear with antialiasing
(``align_corners=False``, the pixel-centre convention of both resizes), and then compared position by position.
Equal grids are compared as they are. The same rule applies to every neck level.

Resolution sweep: one candidate trunk serves every input size (a trunk from ``build_trunk`` takes any multiple of
patch x window), so :class:`FeatureComparer` is made once per size around the same trunk and reference model,
and the reference maps, which do not depend on the candidate's size, are computed once per image
(:meth:`FeatureComparer.reference_maps`) and handed to each comparer. Points of a sweep over several sizes are
labelled ``'12 @ 768'`` (:func:`sweep_label`); a sweep at one size keeps the plain window labels.

Maps compared, per image:

- ``trunk``: what the trunk hands SAM3's neck ((C, g, g); C = 1024 for PE and the C-RADIOv4 ``sam3`` adaptor).
- ``neck_<s>x``: each level of SAM3's detector neck (``Sam3DualViTDetNeck.convs``; scales 4, 2, 1, 0.5 of the
  grid, 256 channels). The *reference model's* neck is applied to both trunk outputs, so a random-weight run
  compares like with like; with SAM3's weights it is also the neck the C-RADIO model loads.

Per map: ``cos`` = mean over positions of the cosine similarity of the two C-vectors at that position, and
``rel_err`` = ||candidate - reference||_F / ||reference||_F over the whole map.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import GLOBAL, Window, format_window

__all__ = ['match_grids', 'compare_maps', 'neck_maps', 'preprocess', 'sweep_label', 'FeatureComparer', 'summarize']


def match_grids(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the grid rule to two (B, C, H, W) maps: unchanged if their grids are equal, else both resampled
    (bilinear, antialiased) to the smaller grid (min H, min W).

    Example:
        >>> a, b = torch.ones(1, 3, 8, 8), torch.ones(1, 3, 4, 4)
        >>> [tuple(t.shape) for t in match_grids(a, b)]
        [(1, 3, 4, 4), (1, 3, 4, 4)]
    """
    if a.ndim != 4 or b.ndim != 4 or a.shape[:2] != b.shape[:2]:
        raise ValueError(f'expected two (B, C, H, W) maps with the same B and C, got {tuple(a.shape)} and '
                         f'{tuple(b.shape)}; the candidate trunk must have the reference trunk\'s width')
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))

    def resample(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x.float(), size=size, mode='bilinear', align_corners=False, antialias=True)

    return resample(a), resample(b)


def compare_maps(candidate: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """``{'cos', 'rel_err'}`` of two (1, C, H, W) maps after :func:`match_grids` (see the module docstring).

    Example:
        >>> r = torch.randn(1, 4, 3, 3)
        >>> {k: round(v, 4) for k, v in compare_maps(2 * r, r).items()}
        {'cos': 1.0, 'rel_err': 1.0}
    """
    c, r = match_grids(candidate.float(), reference.float())
    cos = F.cosine_similarity(c, r, dim=1, eps=1e-8)  # (B, H, W)
    rel = (c - r).flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1).clamp_min(1e-12)
    return {'cos': float(cos.mean()), 'rel_err': float(rel.mean())}


def neck_maps(neck: torch.nn.Module, trunk_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """SAM3's detector neck levels of one trunk map: ``{'neck_4x': ..., 'neck_2x': ..., 'neck_1x': ...,
    'neck_0.5x': ...}`` (``neck`` is a ``Sam3DualViTDetNeck``; its ``convs``, not its trunk, are used)."""
    return {f'neck_{s:g}x': conv(trunk_map) for s, conv in zip(neck.scale_factors, neck.convs)}


def preprocess(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size), as ``Sam3Processor.set_image`` prepares it (torchvision v2
    resize of the uint8 image, then mean = std = 0.5)."""
    from torchvision.transforms import v2

    x = v2.functional.to_image(np.ascontiguousarray(image) if image.flags.writeable else image.copy())
    x = v2.functional.resize(x, [size, size], antialias=True)
    x = v2.functional.to_dtype(x, torch.float32, scale=True)
    return v2.functional.normalize(x, [0.5] * 3, [0.5] * 3)[None]


def sweep_label(window: Window, resolution: int, several: bool) -> str:
    """The label of one (window, resolution) point in records, summaries and tables: the plain window ('global',
    '12') when the sweep has one resolution (the labels of runs without ``--resolutions``), else '12 @ 768'.

    Example:
        >>> sweep_label(12, 768, True), sweep_label('global', 1152, False)
        ('12 @ 768', 'global')
    """
    return f'{format_window(window)} @ {int(resolution)}' if several else format_window(window)


class FeatureComparer:
    """Compare a candidate trunk (C-RADIO) with a reference SAM3 image model (PE), per image and window size, at one
    candidate input size. For a resolution sweep make one per size around the same trunk and reference, and pass
    each the maps of :meth:`reference_maps` so that the reference runs once per image.

    Args:
        reference: an image model from ``build_sam3('pe', ...)``; its trunk and neck give the reference maps.
        candidate_trunk: a ``CRadioTrunk`` (e.g. from ``build_trunk('cradio_v4_h')``, which takes any input size).
        candidate_size: the candidate's input size in pixels (1152 for C-RADIOv4).
        device: where both models are.
    """

    def __init__(self, reference: torch.nn.Module, candidate_trunk: torch.nn.Module, candidate_size: int,
                 device: torch.device) -> None:
        fixed = getattr(candidate_trunk, 'image_size', None)
        if fixed is not None and fixed != int(candidate_size):
            # a trunk taken from a built SAM3 model is pinned to that model's size; say so before the first image
            raise ValueError(f'the candidate trunk only takes {fixed} px inputs, not {candidate_size} px; build it '
                             'with sam3_cradio.build.build_trunk, which takes any size')
        self.ref_neck = reference.backbone.vision_backbone
        self.ref_size = int(reference.sam3_cradio_cfg['image_size'])
        self.cand = candidate_trunk
        self.cand_size = int(candidate_size)
        self.device = device

    @torch.inference_mode()
    def reference_maps(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """The reference's trunk map and neck levels of one (H, W, 3) uint8 image (``{'trunk', 'neck_4x', ...}``):
        independent of the candidate's size, so one result serves every comparer of a resolution sweep."""
        ref_trunk = self.ref_neck.trunk(preprocess(image, self.ref_size).to(self.device))[-1].float()
        return {'trunk': ref_trunk, **neck_maps(self.ref_neck, ref_trunk)}

    @torch.inference_mode()
    def compare(self, image: np.ndarray, windows: Sequence[Window],
                reference: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """``{window label: {map name: {'cos', 'rel_err'}}}`` for one (H, W, 3) uint8 image, for each window
        ('global' or tokens; checked by the caller with :func:`sam3_cradio.registry.resolve`), labelled
        'global', '8', ... ``reference``: this image's :meth:`reference_maps`, when already computed."""
        ref = self.reference_maps(image) if reference is None else reference
        x = preprocess(image, self.cand_size).to(self.device)
        out: dict[str, dict[str, dict[str, float]]] = {}
        encoder = self.cand.encoder
        saved = encoder.window_size
        try:
            for w in windows:
                encoder.set_window_size(None if w == GLOBAL else int(w))
                cand_trunk = self.cand(x)[-1].float()
                cand = {'trunk': cand_trunk, **neck_maps(self.ref_neck, cand_trunk)}
                out[format_window(w)] = {k: compare_maps(cand[k], ref[k]) for k in ref}
        finally:
            encoder.set_window_size(saved)
        return out


def summarize(records: Sequence[dict[str, dict[str, dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and worst case over images: ``{window: {map: {'cos', 'cos_min', 'rel_err', 'rel_err_max'}}}``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for window in records[0]:
        out[window] = {}
        for name in records[0][window]:
            cos = np.array([r[window][name]['cos'] for r in records])
            rel = np.array([r[window][name]['rel_err'] for r in records])
            out[window][name] = {'cos': float(cos.mean()), 'cos_min': float(cos.min()),
                                 'rel_err': float(rel.mean()), 'rel_err_max': float(rel.max())}
    return out
