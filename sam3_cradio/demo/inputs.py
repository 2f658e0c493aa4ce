"""What the page sends, checked: uploaded images, text / box / click prompts, backbone and window menu values.

Every problem is a :class:`UserError` whose message is shown in the page as is, naming the user's own numbers
(pixels of the uploaded image, not of its downscaled copy) and never a server path.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam3_cradio.registry import Backbone, ModelSpec, format_window, get_backbone, parse_window, resolve

__all__ = [
    'parse_box',
    'UserError', 'POSITIVE', 'NEGATIVE', 'NONE', 'MAX_TEXTS', 'LoadedImage', 'image_key', 'load_upload',
    'read_annotation', 'parse_texts', 'parse_points', 'is_negative', 'ImagePrompt', 'make_image_prompt',
    'parse_backbone', 'page_spec', 'window_menu', 'hide_paths',
]

POSITIVE, NEGATIVE = 'positive', 'negative'
NONE = 'none'          # the comparison menu's "no second backbone"
MAX_TEXTS = 8          # noun phrases per request
# A resource limit of this server (tokenizing is cheap but not free), not an input rule: a phrase over SAM3's
# 32-token context is run like everywhere else, its ignored end named in the page (predictor.text_overflow).
MAX_TEXT_CHARS = 2000


class UserError(ValueError):
    """A problem with the user's input or setup, shown in the page as is."""


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class LoadedImage:
    image: np.ndarray           # (h, w, 3) uint8: what the model sees (maybe downscaled)
    orig_size: tuple[int, int]  # (W, H) of the upload
    scale: float                # working pixels per original pixel
    note: str = ''

    @property
    def key(self) -> str:
        return image_key(self.image)


def image_key(image: np.ndarray) -> str:
    """A content hash of an image (the encoded-image cache key)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def load_upload(path: str | os.PathLike, max_side: int, max_pixels: float, name: str | None = None) -> LoadedImage:
    """Read an uploaded image: EXIF orientation applied, odd modes (16-bit, palette, CMYK, alpha) to 8-bit RGB by
    the library's rule (:func:`sam3_cradio.images.to_rgb_array`: any size from 1 x 1 px); refused with a message when
    unreadable or over ``max_pixels`` (this server's limit); downscaled to ``max_side`` on its long side.
    Messages call the file ``name`` (default: its file name), never by its path on the server."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from sam3_cradio.images import to_rgb_array

    shown = name or Path(str(path)).name
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:  # checked before decoding
                raise UserError(f'{shown} is {w}x{h} ({w * h / 1e6:.0f} megapixels); this demo accepts up to '
                                f'{max_pixels / 1e6:.0f} megapixels. Downscale it first.')
            frames = getattr(im, 'n_frames', 1)
            im.load()
            im = ImageOps.exif_transpose(im) or im  # a copy: one frame
            rgb = to_rgb_array(im)
    except UserError:
        raise
    except Image.DecompressionBombError:
        raise UserError(f'{shown} is too large to decode safely; downscale it first.') from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as e:
        why = str(e).replace(str(path), shown)
        raise UserError(f'{shown} is not an image this demo can read ({type(e).__name__}: {why}). '
                        f'Use a JPEG, PNG, WebP, BMP, GIF or TIFF file.') from None
    h, w = rgb.shape[:2]  # any size from 1 x 1 px: the library's rule (sam3_cradio.images), no minimum here
    scale, notes = 1.0, []
    if frames > 1:  # as the library warns: an animated image is segmented on its first frame
        notes.append(f'{shown} has {frames} frames; using the first.')
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS, reducing_gap=3.0))
        notes.append(f'The {w}x{h} image was downscaled to {nw}x{nh} (--max-image-side {max_side}).')
    return LoadedImage(np.ascontiguousarray(rgb), (w, h), scale, ' '.join(notes))


def read_annotation(data: dict, max_side: int, max_pixels: float) -> dict | None:
    """The image annotator's payload (``{'image': {'path', 'orig_name'}, 'boxes': [...], 'orientation'}``) ->
    ``{'image': LoadedImage, 'boxes': [{'xmin', 'ymin', 'xmax', 'ymax', 'label'}]}`` with boxes as floats in the
    original image's pixels (on the image as rotated in the page); None without an image."""
    image = data.get('image') or {}
    path = image.get('path') if isinstance(image, dict) else getattr(image, 'path', None)
    if not path:
        return None
    name = image.get('orig_name') if isinstance(image, dict) else getattr(image, 'orig_name', None)
    loaded = load_upload(path, max_side, max_pixels, name=name)
    orientation = int(data.get('orientation') or 0) % 4
    if orientation:  # rotated in the page (clockwise quarter turns): boxes are drawn on the rotated image
        loaded.image = np.ascontiguousarray(np.rot90(loaded.image, k=-orientation))
        w, h = loaded.orig_size
        loaded.orig_size = (h, w) if orientation % 2 else (w, h)
    boxes = []
    for b in data.get('boxes') or []:
        s = float(b.get('scaleFactor') or 1.0)  # the page's display scale
        boxes.append({'xmin': float(b['xmin']) / s, 'ymin': float(b['ymin']) / s,
                      'xmax': float(b['xmax']) / s, 'ymax': float(b['ymax']) / s,
                      'label': str(b.get('label') or POSITIVE)})
    return {'image': loaded, 'boxes': boxes}


# ----------------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------------

def parse_texts(text: str | None) -> list[str]:
    """Comma-separated noun phrases -> a list (empty when no text was given)."""
    if text is None or not str(text).strip():
        return []
    texts = [t for t in (t.strip() for t in str(text).split(',')) if t]
    if not texts:
        raise UserError(f'the text prompt {text!r} holds no words: give noun phrases separated by commas, '
                        f'e.g. "cup, spoon"')
    if len(texts) > MAX_TEXTS:
        raise UserError(f'{len(texts)} text prompts: at most {MAX_TEXTS} at a time')
    if len(str(text)) > MAX_TEXT_CHARS:
        raise UserError(f'the text prompt is {len(str(text))} characters long; this demo takes at most '
                        f'{MAX_TEXT_CHARS}. Use short noun phrases: SAM3 reads 30 tokens of each')
    return texts


def is_negative(label: Any) -> bool:
    """A box or click label meaning "not this": 'negative', '-', 0, False."""
    return str(label).strip().lower().startswith(('neg', '-', '0', 'false'))


def parse_points(points: Any) -> tuple[list[list[float]], list[int]]:
    """Clicks ``[[x, y, label], ...]`` (or a gradio table ``{'data': ...}``) -> (xy, labels 1 / 0)."""
    if points is None or points == '' or points == []:
        return [], []
    if isinstance(points, dict) and 'data' in points:
        points = points['data']
    try:
        xy = [[float(p[0]), float(p[1])] for p in points]
        labels = [0 if (len(p) > 2 and is_negative(p[2])) else 1 for p in points]
    except (TypeError, ValueError, IndexError, KeyError):
        raise UserError(f'clicks are a list of [x, y, label] (label 1 / positive or 0 / negative), got {points!r}'
                        ) from None
    if not all(math.isfinite(v) for p in xy for v in p):
        raise UserError(f'clicks must be finite numbers, got {points!r}')
    return xy, labels


@dataclass
class ImagePrompt:
    """A checked image prompt in working pixels (the possibly downscaled image the model sees)."""
    texts: list[str]
    boxes: list[list[float]]
    box_labels: list[bool]      # True: positive exemplar
    points: list[list[float]]
    point_labels: list[int]
    notes: list[str] = field(default_factory=list)


def parse_box(box: dict, height: int, width: int) -> np.ndarray:
    """An annotator box (``xmin``, ``ymin``, ``xmax``, ``ymax`` in original pixels) checked against the image."""
    from sam3_cradio.predictor import check_box  # sam3 and torch stay unimported until a request needs them

    try:
        return check_box([box['xmin'], box['ymin'], box['xmax'], box['ymax']], height, width)
    except (KeyError, TypeError):
        raise UserError(f'a box is a dict with xmin, ymin, xmax, ymax, got {box!r}') from None
    except ValueError as e:
        raise UserError(str(e)) from None


def make_image_prompt(loaded: LoadedImage, boxes: Sequence[dict], text: str | None, points: Any) -> ImagePrompt:
    """Check every prompt in the original image's pixels (messages name the user's numbers), then scale."""
    from sam3_cradio.predictor import check_points

    texts = parse_texts(text)
    W, H = loaded.orig_size
    s = loaded.scale
    bxs, blabels = [], []
    for b in boxes or []:
        bxs.append([float(v) * s for v in parse_box(b, H, W)])
        blabels.append(not is_negative(b.get('label', POSITIVE)))
    pts, plabels = parse_points(points)
    if pts:
        try:
            check_points(pts, plabels, H, W)
        except ValueError as e:
            raise UserError(str(e)) from None
        pts = [[x * s, y * s] for x, y in pts]
    if not (texts or bxs or pts):
        raise UserError('Give a prompt: type noun phrases (e.g. "cup, spoon"), drag a box on the image, or click '
                        'points under "Point clicks".')
    notes = []
    if pts and texts:
        notes.append('Clicks segment one object: the text prompt was not used (clear the clicks to use it).')
    if pts and sum(1 for x in blabels if x) > 1:
        notes.append('With clicks only the first positive box is used.')
    if bxs and not any(blabels) and not texts and not pts:
        notes.append('Only negative boxes and no text: SAM3 has nothing to look for, expect no detections.')
    return ImagePrompt(texts, bxs, blabels, pts, plabels, notes)


# ----------------------------------------------------------------------------------------------------------------
# Backbone and window menus
# ----------------------------------------------------------------------------------------------------------------

def parse_backbone(value: Any, offered: Sequence[str]) -> Backbone:
    """A backbone menu value (its label, or a registered name) -> the backbone, if the page offers it."""
    allowed = [get_backbone(n) for n in offered]
    try:
        b = get_backbone(str(value))
    except ValueError:
        b = None
    if b not in allowed:
        raise UserError(f'unknown backbone {value!r}; choose one of {[x.label for x in allowed]}')
    return b


def page_spec(backbone: Any, window: Any, offered: Sequence[str]) -> ModelSpec:
    """The model a (backbone menu, window menu) pair selects, checked by the registry. The window menu shows PE's
    fixed window as its only entry: that value means "PE as it is", any other is refused."""
    b = parse_backbone(backbone, offered)
    try:
        w = parse_window(window)
        if not b.is_cradio and w == b.fixed_window:
            w = None
        return resolve(b, w)
    except ValueError as e:
        raise UserError(f'{b.label}: {e}') from None


def window_menu(backbone: Backbone, window: Any = None) -> tuple[list[str], str]:
    """(choices, selected value) of the window menu for ``backbone`` at its native size; ``window`` (checked
    already) is added to the choices when the menu does not list it."""
    choices = [format_window(w) for w in backbone.window_choices()]
    value = format_window(resolve(backbone, None).window if window is None else window)
    if value not in choices:
        choices.append(value)
    return choices, value


# ----------------------------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------------------------

def hide_paths(text: str, roots: Iterable[str | os.PathLike]) -> str:
    """``text`` with every path under ``roots`` (the server's upload and work folders) cut to its file name."""
    for root in roots:
        for r in {str(root), os.path.realpath(root)}:
            r = r.rstrip('/\\')
            if r:
                text = re.sub(re.escape(r) + r'[/\\][^\s\'"`]*', lambda m: Path(m.group(0)).name, text)
    return text
