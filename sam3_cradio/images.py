"""Image input: any common file or array -> 8-bit RGB, and RGB -> the encoder's (B, 3, H, W) float tensor.

Odd inputs get a defined behaviour instead of a crash: grayscale is replicated to RGB, alpha is dropped (the
encoders never saw transparency), 16-bit and float images are rescaled from their full range to 8 bits, palette
and CMYK images are converted. Anything PIL cannot read raises a ValueError naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = ['ImageLike', 'load_image', 'to_rgb_array', 'image_to_tensor']

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def _array_to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        if info.min < 0:
            a = a.astype(np.float64) - info.min
        return np.round(a.astype(np.float64) * 255.0 / (info.max - min(info.min, 0))).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError('the image holds NaN or infinite values')
        # float images are taken as [0, 1] (the usual convention), clipped
        return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f'unsupported image dtype {a.dtype}')


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB array from a path, PIL image or array ((H, W), (H, W, 1|3|4))."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f'image {str(path)!r} does not exist')
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f'{path} is not an image that can be read ({type(e).__name__}: {e})') from None
        except Image.DecompressionBombError as e:
            raise ValueError(f'{path} is too large to decode safely: {e}') from None
    if isinstance(image, Image.Image):
        if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
            image = np.asarray(image)  # 16/32-bit: rescale from the full range below, PIL would clip
        else:
            return np.asarray(image.convert('RGB'))
    if not isinstance(image, np.ndarray):
        raise TypeError(f'expected a path, PIL image or numpy array, got {type(image).__name__}')
    a = image
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f'expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}')
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f'the image is empty (shape {a.shape})')
    return np.ascontiguousarray(_array_to_uint8(a[..., :3]))


def load_image(image: ImageLike) -> Image.Image:
    """Any supported input -> an 8-bit RGB PIL image."""
    return Image.fromarray(to_rgb_array(image))


def image_to_tensor(image: ImageLike, size: Tuple[int, int]) -> torch.Tensor:
    """Resize straight to ``size`` (H, W) (bilinear, antialiased) -> (1, 3, H, W) float32 RGB in [0, 1]."""
    a = to_rgb_array(image)
    x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False, antialias=True).clamp_(0, 1)
    return x
