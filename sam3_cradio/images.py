"""Image input: any common file or array -> 8-bit RGB, and RGB -> the encoder's (B, 3, H, W) float tensor.

Odd inputs get one documented rule (the README's "Inputs" section) in the API, the CLI and the demo alike:
grayscale is replicated to RGB, alpha is dropped (the encoders never saw transparency), palette and CMYK images
are converted, animated images use their first frame (with a warning). Pixel values, by dtype:

* ``uint8``: as is; ``bool``: False -> 0, True -> 255;
* ``uint16`` (and 16-bit image files): the full 0..65535 range maps to 0..255;
* floats: values in [0, 1]; anything outside (a [0, 255] float image, say) is refused, not clipped;
* other integer types: values in 0..255, taken as 8-bit; anything outside is refused.

What the rule cannot read unambiguously raises a ValueError that states the rule; so does anything PIL cannot read.

Size: any image of at least 1 x 1 pixel, whatever its aspect ratio; the model input is the image resized straight to
the backbone's square resolution, and results come back at the image's own size. Only an empty (0-pixel) image is
refused. A file is decoded only up to :data:`MAX_PIXELS` (120 megapixels): a larger one (say a 12000 x 12000 PNG of
a few KB, 432 MB decoded) is refused from its header, before decoding, so that a folder job's decoding workers
cannot each take gigabytes. Front ends may add resource limits of their own (the demo: a megapixel cap, a
downscale of large uploads), never a minimum size.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = ['ImageLike', 'MAX_PIXELS', 'load_image', 'to_rgb_array', 'image_to_tensor']

ImageLike = str | os.PathLike | Image.Image | np.ndarray

#: the most pixels (width x height) an image file is decoded with; a larger file is refused before decoding.
#: Above the largest camera sensors (100-108 megapixels); set it in Python to change the limit.
MAX_PIXELS = 120_000_000


# Float round-off just outside [0, 1] (e.g. 1.0000001 after a resize) is not a different convention.
_FLOAT_SLACK = 1e-3


def _array_to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f'{a.dtype} image with values {lo}..{hi}: integer images other than uint8/uint16 must hold 8-bit '
                f'values (0..255). Pass 16-bit data as uint16, or scale it to uint8 yourself')
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError('the image holds NaN or infinite values')
        lo, hi = float(a.min()), float(a.max())
        if lo < -_FLOAT_SLACK or hi > 1 + _FLOAT_SLACK:
            hint = ' (it looks like 0..255 data: pass image.astype(np.uint8), or divide by 255)' if hi <= 255 else ''
            raise ValueError(f'float image with values {lo:g}..{hi:g}: float images must hold values in [0, 1]{hint}')
        return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f'unsupported image dtype {a.dtype}: use uint8, uint16, bool or float in [0, 1]')


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """16/32-bit PIL modes as arrays the dtype rule reads (PIL's own RGB conversion would clip them)."""
    a = np.asarray(image)
    if image.mode.startswith('I'):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f'32-bit integer image with values {lo}..{hi}: only 8- and 16-bit images can be read')
        return a.astype(np.uint16)  # 16-bit files open as 'I;16' or, in some PIL versions, as 'I'
    return a  # 'F': the float rule


def _too_large(path: Path, size: str) -> str:
    return (f'{path} is too large to decode: {size}, above the limit of {MAX_PIXELS / 1e6:g} megapixels per image '
            '(sam3_cradio.images.MAX_PIXELS); downscale it first')


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB array from a path, PIL image or array ((H, W), (H, W, 1|3|4))."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f'image {str(path)!r} does not exist')
        try:
            with warnings.catch_warnings():  # PIL's DecompressionBombWarning: the limit below says it in our words
                warnings.simplefilter('ignore', Image.DecompressionBombWarning)
                opened = Image.open(path)
            with opened as im:
                w, h = im.size
                if w * h > MAX_PIXELS:  # from the header: nothing decoded yet
                    raise ValueError(_too_large(path, f'{w} x {h} pixels ({w * h / 1e6:.0f} megapixels)'))
                if getattr(im, 'n_frames', 1) > 1:
                    warnings.warn(f'{path.name} has {im.n_frames} frames; using the first', stacklevel=2)
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f'{path} is not an image that can be read ({type(e).__name__}: {e})') from None
        except Image.DecompressionBombError as e:
            n = re.search(r'\((\d+) pixels\)', str(e))  # PIL's own bomb check, in Image.open
            raise ValueError(_too_large(path, f'{int(n[1]) / 1e6:.0f} megapixels' if n else str(e))) from None
    if isinstance(image, Image.Image):
        frames = getattr(image, 'n_frames', 1)
        if frames > 1:  # an opened animated file: PIL shows its current frame
            name = Path(image.filename).name if getattr(image, 'filename', '') else 'the image'
            warnings.warn(f'{name} has {frames} frames; using frame {image.tell()}', stacklevel=2)
        if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
            image = _pil_to_array(image)
        else:
            image = np.asarray(image.convert('RGB'))  # uint8: the checks below only refuse an empty image
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


def image_to_tensor(image: ImageLike, size: tuple[int, int]) -> torch.Tensor:
    """Resize straight to ``size`` (H, W) (bilinear, antialiased) -> (1, 3, H, W) float32 RGB in [0, 1]."""
    a = to_rgb_array(image)
    x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False, antialias=True).clamp_(0, 1)
    return x
