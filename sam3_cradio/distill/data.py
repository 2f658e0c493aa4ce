"""Images, the resumable sampler, stochastic multi-resolution sampling and shifted-crop views."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cradio import nearest_supported_resolution
from ..images import ImageLike, to_rgb_array
from .losses import Box

__all__ = ['IMAGE_EXTENSIONS', 'list_images', 'ImageSet', 'EpochSampler', 'ResolutionSampler', 'make_canvas',
           'crop_view', 'random_offset']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """A folder (searched recursively, sorted) or a list of files -> image paths; raises if there are none."""
    if isinstance(source, (str, Path)):
        root = Path(source)
        if not root.exists():
            raise FileNotFoundError(f'image folder {str(root)!r} does not exist')
        paths = [root] if root.is_file() else sorted(
            p for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {source!r}')
    return paths


class ImageSet:
    """Images read on demand (paths) or held in memory (arrays); ``load(i)`` -> (H, W, 3) uint8."""

    def __init__(self, items: Sequence[ImageLike]) -> None:
        if len(items) == 0:
            raise ValueError('an ImageSet needs at least one image')
        self.items = list(items)

    @classmethod
    def from_source(cls, source: str | Path | Sequence[str | Path]) -> ImageSet:
        return cls(list_images(source))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> np.ndarray:
        return to_rgb_array(self.items[index])


class EpochSampler:
    """Seeded epoch permutations read ``batch_size`` at a time, sharded over DDP ranks; resumable by state_dict.

    Every rank walks the same global order, taking ``batch_size`` consecutive slots of each global batch of
    ``batch_size * world_size``.
    """

    def __init__(self, num_items: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_items, self.seed, self.rank, self.world_size = num_items, seed, rank, world_size
        self.epoch, self.position = 0, 0

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)
        return torch.randperm(self.num_items, generator=g).tolist()

    def next_batch(self, batch_size: int) -> list[int]:
        order: list[int] = []
        need = batch_size * self.world_size
        while len(order) < need:
            perm = self._perm(self.epoch)
            take = perm[self.position:self.position + need - len(order)]
            order += take
            self.position += len(take)
            if self.position >= self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
        return order[self.rank * batch_size:(self.rank + 1) * batch_size]

    def state_dict(self) -> dict[str, int]:
        return {'epoch': self.epoch, 'position': self.position, 'seed': self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state['seed'] != self.seed:
            raise ValueError(f'checkpoint sampler seed {state["seed"]} differs from run.seed {self.seed}')
        self.epoch, self.position = int(state['epoch']), int(state['position'])


class ResolutionSampler:
    """Stochastic multi-resolution: a side from the high partition with probability ``p_high``, else from the low
    one, uniformly; every side rounded to a multiple of ``step`` (the student's patch x window size), duplicates
    merged, sides above ``max_resolution`` dropped.

    Example:
        >>> ResolutionSampler([128, 192, 224], [512], step=64).low
        [128, 192, 256]
    """

    def __init__(self, low: Sequence[int], high: Sequence[int], step: int, p_high: float = 0.5,
                 max_resolution: int | None = None) -> None:
        def snap(sides: Sequence[int]) -> list[int]:
            out = sorted({nearest_supported_resolution(int(s), int(s), step)[0] for s in sides})
            return [s for s in out if max_resolution is None or s <= max_resolution]

        self.low, self.high = snap(low), snap(high)
        if not 0.0 <= p_high <= 1.0:
            raise ValueError(f'p_high must be in [0, 1], got {p_high}')
        if (p_high < 1 and not self.low) or (p_high > 0 and not self.high):
            raise ValueError(f'empty resolution partition after rounding to step {step}: low {self.low}, high {self.high}')
        self.p_high = p_high

    def sample(self, generator: torch.Generator) -> int:
        use_high = float(torch.rand((), generator=generator)) < self.p_high
        sides = self.high if use_high else self.low
        return sides[int(torch.randint(len(sides), (), generator=generator))]


def random_offset(max_shift: int, step: int, generator: torch.Generator) -> int:
    """A multiple of ``step`` in [0, max_shift], uniformly."""
    return int(torch.randint(max_shift // step + 1, (), generator=generator)) * step


def make_canvas(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Centre square crop of each (H, W, 3) uint8 image, resized (bilinear, antialiased) -> (B, 3, size, size) in [0, 1]."""
    out = []
    for a in images:
        h, w = a.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        t = torch.from_numpy(np.array(a[y:y + s, x:x + s])).permute(2, 0, 1)[None].float().div_(255.0)
        if s != size:
            t = F.interpolate(t, size=(size, size), mode='bilinear', align_corners=False, antialias=True).clamp_(0, 1)
        out.append(t)
    return torch.cat(out)


def crop_view(canvas: torch.Tensor, box: Box, input_size: tuple[int, int]) -> torch.Tensor:
    """Crop integer ``box`` = (y, x, h, w) from (B, 3, S, S) and resize it to ``input_size`` if it differs."""
    y, x, h, w = (int(v) for v in box)
    if y < 0 or x < 0 or y + h > canvas.shape[-2] or x + w > canvas.shape[-1]:
        raise ValueError(f'crop {box} leaves the {tuple(canvas.shape[-2:])} canvas')
    v = canvas[..., y:y + h, x:x + w]
    if (h, w) != tuple(input_size):
        v = F.interpolate(v, size=tuple(input_size), mode='bilinear', align_corners=False, antialias=True)
    return v
