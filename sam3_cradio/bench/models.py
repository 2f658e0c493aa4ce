"""The benchmarked models, all through the registry and :func:`~sam3_cradio.build.build_trunk` (the function the
distillation teachers build PE with) or :func:`~sam3_cradio.build.build_sam3`; random weights, no download."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..registry import Backbone, resolve

__all__ = ['PELayout', 'pe_layout', 'pe_trunk', 'pe_built_layout', 'cradio_trunk', 'sam3_model', 'num_params',
           'compiled', 'synthetic_image']


@dataclass(frozen=True)
class PELayout:
    """PE's attention layout: its fixed window, how many blocks use it, how many are global."""
    window: int
    windowed_blocks: int
    global_blocks: int

    def padded_grid(self, grid: int) -> int:
        """The grid PE pads to in its windowed blocks (a multiple of its window: 36 -> 48 for 24)."""
        return math.ceil(grid / self.window) * self.window


def pe_layout(pe: Backbone) -> PELayout:
    """PE's layout from the registry (its window) and its config (block counts); nothing is built."""
    from ..build import compose_config

    if pe.fixed_window is None:
        raise ValueError(f'{pe.name} is not a PE backbone (its window is not fixed)')
    cfg = compose_config(resolve(pe))
    depth, n_global = int(cfg.trunk.depth), len(cfg.trunk.global_att_blocks)
    return PELayout(pe.fixed_window, depth - n_global, n_global)


def pe_trunk(pe: Backbone, grid: int, device: torch.device | str) -> nn.Module:
    """SAM3's PE ViT trunk alone at ``grid`` tokens per side (its RoPE tables fix the input size)."""
    from ..build import build_trunk

    return build_trunk(resolve(pe, resolution=grid * pe.patch_size), device=device)


def pe_built_layout(trunk: nn.Module) -> PELayout:
    """The layout of a built PE trunk (``sam3.model.vitdet.ViT``): what was measured, not what was planned."""
    windows = [b.window_size for b in trunk.blocks if b.window_size > 0]
    if not windows:
        raise ValueError('this PE trunk has no windowed blocks')
    return PELayout(windows[0], len(windows), len(trunk.blocks) - len(windows))


def cradio_trunk(backbone: Backbone, device: torch.device | str) -> nn.Module:
    """A C-RADIO trunk as SAM3 calls it (backbone + ``sam3`` adaptor, 1024-channel map out) with random weights;
    the window is switched at run time (``trunk.encoder.set_window_size``), the input size is free."""
    from ..build import build_trunk

    return build_trunk(resolve(backbone), device=device)


def sam3_model(backbone: Backbone, grid: int, device: torch.device | str, dtype: str = 'fp32') -> nn.Module:
    """The full SAM3 image model (no interactive predictor) on ``backbone`` at ``grid`` tokens per side; C-RADIO
    starts with global attention. ``dtype='bf16'``: bf16 trunk weights, as ``build_sam3(dtype='bf16')`` gives."""
    from ..build import build_sam3

    spec = resolve(backbone, resolution=grid * backbone.patch_size)
    return build_sam3(spec, mode='image', pretrained=False, interactive=False, device=device, dtype=dtype)


def num_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def compiled(fn: Callable, enabled: bool) -> Callable:
    """``torch.compile(fn)`` when ``enabled``, with room for one graph per (window, size)."""
    if not enabled:
        return fn
    import torch._dynamo as dynamo

    # C-RADIO switches windows at run time: one graph per (window, size), more than dynamo's default 8
    for name in ('recompile_limit', 'cache_size_limit', 'accumulated_recompile_limit', 'accumulated_cache_size_limit'):
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, max(getattr(dynamo.config, name), 256))
    return torch.compile(fn)


def synthetic_image(hw: tuple[int, int], seed: int) -> np.ndarray:
    """The (H, W, 3) uint8 image the whole-model rows are timed on: smooth colour gradients plus seeded noise (an
    image, not pure noise)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
