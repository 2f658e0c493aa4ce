"""Gradio demo: SAM3 with NVIDIA C-RADIOv4 (or SAM3's own PE) as the vision backbone.

    python -m demo.app --tiny                      # random tiny weights: try the interface, no downloads
    python -m demo.app                             # C-RADIOv4-H, weights from the Hugging Face cache (or downloaded)
    python -m demo.app --sam3-checkpoint sam3.pt --cradio-checkpoint cradio_v4_h=c-radio_v4-h_half.pth.tar

Image tab: text prompts (comma-separated), positive / negative exemplar boxes, point clicks; a confidence slider
that only re-filters the last result. Video tab: track a text prompt or a first-frame box through a short clip.
A backbone selector (and an optional second backbone side by side) shows the measured encoder / decoder times.

Design:

- Models are built lazily, once per (backbone, window size, mode), behind a lock, and kept in a small LRU
  (``--max-models``). Missing weights do not stop the app: the build error (which names the file to fetch and where
  to put it) is shown in the page.
- Each request gets its own predictor; a per-model lock serialises inference on a model (sam3 keeps per-call state
  on the model, e.g. the interactive predictor's features). Image features are cached per (model, image hash) in an
  LRU (``--feature-cache``), so a new prompt on the same image skips the encoder.
- The last raw result (all detections above a low floor) lives in the session's state; the slider only filters it.
- User errors (unreadable or huge images, empty prompts, boxes outside the image, long videos, missing weights)
  become a message in the page, never a stack trace.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    from sam3_cradio.predictor import ImageFeatures

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
TINY_CHECKPOINT = REPO / 'tests' / 'data' / 'cradio_tiny' / 'model.pth.tar'
EXAMPLE_IMAGES = sorted((REPO / 'tests' / 'data' / 'images').glob('*.jpg'))

# backbone name (build_sam3) -> label in the page
BACKBONE_LABELS: Dict[str, str] = {
    'pe': 'SAM3 PE (Meta)',
    'cradio_v4_h': 'C-RADIOv4-H',
    'cradio_v4_so400m': 'C-RADIOv4-SO400M',
    'cradio_tiny': 'C-RADIO tiny (random weights)',
}
LABEL_TO_BACKBONE = {v: k for k, v in BACKBONE_LABELS.items()}
# C-RADIO token grid (image_size / patch_size); PE's windows are fixed by its checkpoint
_GRID = {'cradio_v4_h': 72, 'cradio_v4_so400m': 72, 'cradio_tiny': 16}
_WINDOWS = {72: [6, 8, 12, 18, 24]}
# C-RADIO release of each backbone (for the missing-weights message)
_CRADIO_VARIANT = {'cradio_v4_h': 'c-radio_v4-h', 'cradio_v4_so400m': 'c-radio_v4-so400m'}
_SHORT = {'pe': 'PE', 'cradio_v4_h': 'RADIOv4-H', 'cradio_v4_so400m': 'RADIOv4-SO400M', 'cradio_tiny': 'tiny'}
GLOBAL = 'global'
NONE = 'none'

SCORE_FLOOR = 0.05   # the raw result keeps detections above this; the slider filters from there
RAW_TOPK = 100       # and at most this many per backbone
POSITIVE, NEGATIVE = 'positive', 'negative'

_CSS = """
#weights-status .prose, #image-status .prose, #video-status .prose { font-size: 0.95em; }
#weights-status pre, #image-status pre, #video-status pre { white-space: pre-wrap; }
"""


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------

class UserError(ValueError):
    """A problem with the user's input or setup, shown in the page as is."""


def _window_arg(value: str) -> Optional[int]:
    from sam3_cradio.cradio import parse_window_size

    return None if value == '0' else parse_window_size(value)  # the demo also takes 0 for global


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sam3-cradio demo',
        description='Gradio demo: SAM3 with a C-RADIOv4 (or PE) vision backbone; image and video prompts.')
    p.add_argument('--tiny', action='store_true',
                   help='run on the tiny C-RADIO of the test fixtures with random SAM3 weights: no downloads, '
                        'meaningless detections; for trying the interface')
    p.add_argument('--backbone', default=None, choices=sorted(BACKBONE_LABELS),
                   help='backbone selected when the page opens (default: cradio_v4_h; cradio_tiny with --tiny)')
    p.add_argument('--window-size', type=_window_arg, default=None,
                   help='C-RADIO ViTDet window selected when the page opens (default: global)')
    p.add_argument('--sam3-checkpoint', default=None,
                   help='local sam3.pt (default: facebook/sam3 from the Hugging Face cache, downloaded if missing)')
    p.add_argument('--cradio-checkpoint', action='append', default=[], metavar='[BACKBONE=]PATH',
                   help='local C-RADIO .pth.tar / .safetensors for a backbone, e.g. '
                        'cradio_v4_so400m=/models/c-radio_v4-so400m_half.pth.tar (repeatable; a bare PATH is for '
                        '--backbone). Default: the NVIDIA release from the Hugging Face cache')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--host', default='127.0.0.1', help='address to serve on (0.0.0.0: every interface)')
    p.add_argument('--port', type=int, default=7860)
    p.add_argument('--share', action='store_true', default=False, help='also open a public gradio.live link')
    p.add_argument('--threshold', type=float, default=None,
                   help='initial confidence threshold (default 0.5; 0.2 with --tiny)')
    p.add_argument('--max-image-side', type=int, default=2048,
                   help='larger images are downscaled to this many pixels on their long side')
    p.add_argument('--max-image-megapixels', type=float, default=100.0,
                   help='images with more pixels are refused (before decoding)')
    p.add_argument('--max-video-frames', type=int, default=240, help='longer videos are refused')
    p.add_argument('--max-video-side', type=int, default=1280,
                   help='video frames are downscaled to this many pixels on their long side')
    p.add_argument('--max-file-size', default='500mb', help='upload limit, e.g. 200mb')
    p.add_argument('--max-models', type=int, default=3,
                   help='models kept in memory (one per backbone, window size and image/video mode)')
    p.add_argument('--feature-cache', type=int, default=4, help='encoded images kept (per model and image)')
    p.add_argument('--concurrency', type=int, default=2,
                   help='image requests processed at once (inference on one model is serialised anyway)')
    p.add_argument('--no-preload', dest='preload', action='store_false',
                   help='do not build the default model at start-up (it is built on the first request)')
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backbone is None:
        args.backbone = 'cradio_tiny' if args.tiny else 'cradio_v4_h'
    if args.backbone == 'cradio_tiny' and not args.tiny:
        parser.error('cradio_tiny has no released weights: use --tiny')
    if args.threshold is None:
        args.threshold = 0.2 if args.tiny else 0.5
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f'--threshold must be in [0, 1], got {args.threshold}')
    ckpts: Dict[str, str] = {}
    for item in args.cradio_checkpoint:
        name, sep, path = item.partition('=')
        if sep and name in BACKBONE_LABELS:
            ckpts[name] = path
        else:
            ckpts[args.backbone] = item
    if 'pe' in ckpts:
        parser.error('the PE backbone takes its weights from sam3.pt (--sam3-checkpoint), not --cradio-checkpoint')
    args.cradio_checkpoints = ckpts
    for name in ('max_image_side', 'max_video_frames', 'max_video_side', 'max_models', 'feature_cache',
                 'concurrency'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    if args.window_size is not None:
        grid = _GRID.get(args.backbone)
        if grid is None or grid % args.window_size:
            parser.error(f'--window-size {args.window_size} does not apply to {args.backbone}: choose one of '
                         f'{window_choices(args.backbone)}')
    return args


def window_choices(backbone: str) -> List[str]:
    grid = _GRID.get(backbone)
    if grid is None:
        return [GLOBAL]  # PE: its own windows (24, with 4 global blocks), fixed by the checkpoint
    sizes = _WINDOWS.get(grid) or [w for w in range(2, grid) if grid % w == 0]
    return [GLOBAL] + [str(w) for w in sizes]


def _parse_window(backbone: str, label: Any) -> Optional[int]:
    if backbone not in _GRID or label in (None, '', GLOBAL):
        return None
    try:
        w = int(label)
    except (TypeError, ValueError):
        raise UserError(f'window size {label!r} is not a number; choose one of {window_choices(backbone)}') from None
    if w < 1 or _GRID[backbone] % w:
        raise UserError(f'window size {w} does not divide the {_GRID[backbone]}x{_GRID[backbone]} token grid of '
                         f'{BACKBONE_LABELS[backbone]}; choose one of {window_choices(backbone)}')
    return w


def _parse_backbone(label: Any, allowed: Sequence[str]) -> str:
    name = LABEL_TO_BACKBONE.get(label, label)
    if name not in allowed:
        raise UserError(f'unknown backbone {label!r}; choose one of {[BACKBONE_LABELS[b] for b in allowed]}')
    return name


def model_title(backbone: str, window: Optional[int], short: bool = False) -> str:
    name = (_SHORT if short else BACKBONE_LABELS)[backbone]
    if backbone not in _GRID:
        return name
    return f'{name} · {("global" if short else "global attention") if window is None else f"window {window}"}'


# ----------------------------------------------------------------------------------------------------------------
# Models (built once per config, lazily, LRU) and encoded-image cache
# ----------------------------------------------------------------------------------------------------------------

ModelKey = Tuple[str, Optional[int], str]  # backbone, window size, mode


@dataclass
class ModelEntry:
    key: ModelKey
    model: Any = None
    error: Optional[str] = None
    building: bool = False
    seconds: float = 0.0
    build_lock: threading.Lock = field(default_factory=threading.Lock)
    run_lock: threading.Lock = field(default_factory=threading.Lock)  # one inference at a time per model

    @property
    def title(self) -> str:
        return model_title(self.key[0], self.key[1])

    @property
    def short_title(self) -> str:
        return model_title(self.key[0], self.key[1], short=True)


class ModelRegistry:
    """Builds each (backbone, window, mode) model once, on first use, and keeps the ``max_models`` last used."""

    def __init__(self, args: argparse.Namespace, on_evict=None) -> None:
        self.args = args
        self.max_models = int(args.max_models)
        self._lock = threading.Lock()
        self._entries: 'OrderedDict[ModelKey, ModelEntry]' = OrderedDict()
        self._on_evict = on_evict
        self.builds = 0

    def entry(self, key: ModelKey) -> ModelEntry:
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                e = self._entries[key] = ModelEntry(key)
            self._entries.move_to_end(key)
            return e

    def peek(self, key: ModelKey) -> Optional[ModelEntry]:
        with self._lock:
            return self._entries.get(key)

    def get(self, backbone: str, window: Optional[int], mode: str) -> ModelEntry:
        """The built model (building it now if needed). Raises FileNotFoundError / ValueError from the build."""
        e = self.entry((backbone, window, mode))
        with e.build_lock:
            if e.model is None:
                self._evict(keep=e.key)  # make room first: never more than max_models in memory
                e.building, e.error = True, None
                t0 = time.perf_counter()
                try:
                    e.model = self._build(backbone, window, mode)
                except Exception as exc:
                    e.error = str(exc) or type(exc).__name__
                    raise
                finally:
                    e.building = False
                e.seconds = time.perf_counter() - t0
                self.builds += 1
                _logger.info('built %s (%s) in %.1fs', e.title, mode, e.seconds)
        return e

    def _evict(self, keep: ModelKey) -> None:
        """Drop the least recently used models so that ``keep`` fits in ``max_models`` (a request still running
        on a dropped model finishes with it; later requests build it again)."""
        with self._lock:
            built = [k for k, e in self._entries.items() if e.model is not None and k != keep]
            drop = built[:max(0, len(built) + 1 - self.max_models)]
            for k in drop:
                self._entries[k].model = None
                _logger.info('dropped %s (%s) from memory (--max-models %d)', self._entries[k].title, k[2],
                             self.max_models)
        for k in drop:
            if self._on_evict:
                self._on_evict(k)
        if drop:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def preflight(self, backbone: str) -> None:
        """Fail fast, with what to do, on local weight paths that do not exist."""
        a = self.args
        if backbone == 'cradio_tiny':
            if not TINY_CHECKPOINT.is_file():
                raise FileNotFoundError(
                    f'the tiny C-RADIO fixture {TINY_CHECKPOINT} is missing: --tiny needs a source checkout of '
                    f'sam3-cradio (tests/data/cradio_tiny/model.pth.tar)')
            return
        if a.sam3_checkpoint is not None and not Path(a.sam3_checkpoint).is_file():
            raise FileNotFoundError(
                f'--sam3-checkpoint {a.sam3_checkpoint} does not exist.\n'
                f'Fetch sam3.pt from the Hugging Face repo facebook/sam3 (gated: accept its license first), e.g.\n'
                f'    hf download facebook/sam3 sam3.pt\n'
                f'and pass its path with --sam3-checkpoint, or drop the flag to use the Hugging Face cache.')
        local = a.cradio_checkpoints.get(backbone)
        if local is not None and not Path(local).is_file():
            rel = _release(backbone)
            hint = (f'Fetch {rel.checkpoint.filename!r} from the Hugging Face repo {rel.checkpoint.repo_id!r}, e.g.\n'
                    f'    hf download {rel.checkpoint.repo_id} {rel.checkpoint.filename}\n') if rel else ''
            raise FileNotFoundError(f'--cradio-checkpoint {backbone}={local} does not exist.\n{hint}'
                                    f'and pass its path, or drop the flag to use the Hugging Face cache.')

    def _build(self, backbone: str, window: Optional[int], mode: str):
        import torch

        from sam3_cradio.build import build_sam3

        self.preflight(backbone)
        a = self.args
        kwargs: Dict[str, Any] = {'mode': mode, 'device': a.device}
        if backbone in _GRID:
            kwargs['window_size'] = window
        if backbone == 'cradio_tiny':
            torch.manual_seed(0)  # the same random SAM3 weights every run
            kwargs.update(pretrained=False, cradio_checkpoint=str(TINY_CHECKPOINT))
        else:
            kwargs.update(pretrained=True, sam3_checkpoint=a.sam3_checkpoint)
            if backbone in a.cradio_checkpoints:
                kwargs['cradio_checkpoint'] = a.cradio_checkpoints[backbone]
        return build_sam3(backbone, **kwargs)


def _release(backbone: str):
    try:
        from sam3_cradio.cradio import RELEASES
        return RELEASES.get(_CRADIO_VARIANT.get(backbone, ''))
    except Exception:  # only used for a hint
        return None


class FeatureCache:
    """Encoded images, keyed by (model key, image hash); LRU of ``size`` entries, thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._lock = threading.Lock()
        self._items: 'OrderedDict[Tuple[ModelKey, str], ImageFeatures]' = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key) -> Optional[ImageFeatures]:
        with self._lock:
            f = self._items.get(key)
            if f is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return f

    def put(self, key, features: ImageFeatures) -> None:
        with self._lock:
            self._items[key] = features
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop_model(self, model_key: ModelKey) -> None:
        with self._lock:
            for k in [k for k in self._items if k[0] == model_key]:
                del self._items[k]

    def __len__(self) -> int:
        return len(self._items)


def _snapshot_features(predictor):
    """The encoded image of a predictor after ``set_image``, or None."""
    try:
        return predictor.features()
    except RuntimeError:
        return None


def _restore_features(predictor, f) -> None:
    """Give a fresh predictor a cached encoded image (a shallow copy per request keeps requests apart)."""
    predictor.set_features(f)


# ----------------------------------------------------------------------------------------------------------------
# Inputs: images (robust loading, downscaling), prompts, videos
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class LoadedImage:
    image: np.ndarray           # (h, w, 3) uint8: what the model sees (maybe downscaled)
    orig_size: Tuple[int, int]  # (W, H) of the upload
    scale: float                # working pixels per original pixel
    note: str = ''

    @property
    def key(self) -> str:
        return image_key(self.image)


def image_key(image: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def load_upload(path: Any, max_side: int, max_pixels: float, name: Optional[str] = None) -> LoadedImage:
    """Read an uploaded image: EXIF orientation applied, odd modes (16-bit, palette, CMYK, alpha) to 8-bit RGB;
    refused with a message when unreadable or over ``max_pixels``; downscaled to ``max_side`` on its long side."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from sam3_cradio.images import to_rgb_array

    shown = name or Path(str(path)).name
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise UserError(f'{shown} is {w}x{h} ({w * h / 1e6:.0f} megapixels); this demo accepts up to '
                                f'{max_pixels / 1e6:.0f} megapixels. Downscale it first.')
            im.load()
            im = ImageOps.exif_transpose(im) or im
            rgb = to_rgb_array(im)
    except UserError:
        raise
    except Image.DecompressionBombError:
        raise UserError(f'{shown} is too large to decode safely; downscale it first.') from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as e:
        why = str(e).replace(str(path), shown)
        raise UserError(f'{shown} is not an image this demo can read ({type(e).__name__}: {why}). '
                        f'Use a JPEG, PNG, WebP, BMP, GIF or TIFF file.') from None
    h, w = rgb.shape[:2]
    if min(h, w) < 8:
        raise UserError(f'{shown} is {w}x{h}: too small to segment (at least 8 pixels a side).')
    scale, note = 1.0, ''
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS, reducing_gap=3.0))
        note = f'The {w}x{h} image was downscaled to {nw}x{nh} (--max-image-side {max_side}).'
    return LoadedImage(np.ascontiguousarray(rgb), (w, h), scale, note)


@lru_cache(maxsize=None)
def annotator_class(max_side: int, max_pixels: float):
    """``gradio_image_annotation.image_annotator`` whose preprocess reads the upload with :func:`load_upload`
    (odd formats converted, huge images refused or downscaled, a message instead of a stack trace) and keeps the
    boxes as floats in the original image's pixels. Its value is ``{'image': LoadedImage, 'boxes': [...]}``.

    A subclass, not a patched instance: gradio re-creates components from their constructor arguments per session.
    It reuses the parent's frontend (block name and component class id).
    """
    import gradio as gr
    from gradio_image_annotation import image_annotator

    class PromptAnnotator(image_annotator):
        def get_block_name(self) -> str:
            return 'image_annotator'

        @classmethod
        def get_component_class_id(cls) -> str:
            return image_annotator.get_component_class_id()

        def preprocess(self, payload):
            if payload is None:
                return None
            data = payload if isinstance(payload, dict) else payload.model_dump()
            image = data.get('image') or {}
            path = image.get('path') if isinstance(image, dict) else getattr(image, 'path', None)
            if not path:
                return None
            name = image.get('orig_name') if isinstance(image, dict) else None
            try:
                loaded = load_upload(path, max_side, max_pixels, name=name)
            except UserError as e:
                raise gr.Error(str(e), title='Cannot use this image') from None
            orientation = int(data.get('orientation') or 0) % 4
            if orientation:  # rotated in the page (clockwise quarter turns): boxes are drawn on the rotated image
                loaded.image = np.ascontiguousarray(np.rot90(loaded.image, k=-orientation))
                w, h = loaded.orig_size
                loaded.orig_size = (h, w) if orientation % 2 else (w, h)
            boxes = []
            for b in data.get('boxes') or []:
                s = float(b.get('scaleFactor') or 1.0)
                boxes.append({'xmin': float(b['xmin']) / s, 'ymin': float(b['ymin']) / s,
                              'xmax': float(b['xmax']) / s, 'ymax': float(b['ymax']) / s,
                              'label': str(b.get('label') or POSITIVE)})
            return {'image': loaded, 'boxes': boxes}

    return PromptAnnotator


def _parse_texts(text: Optional[str]) -> List[str]:
    if text is None or not str(text).strip():
        return []
    parts = [t.strip() for t in str(text).split(',')]
    texts = [t for t in parts if t]
    if not texts:
        raise UserError(f'the text prompt {text!r} holds no words: give noun phrases separated by commas, '
                        f'e.g. "cup, spoon"')
    if len(texts) > 8:
        raise UserError(f'{len(texts)} text prompts: at most 8 at a time')
    long = [t for t in texts if len(t) > 120]
    if long:
        raise UserError(f'text prompt {long[0][:40]!r}... is too long: use short noun phrases (SAM3 reads 32 tokens)')
    return texts


def _is_negative(label: Any) -> bool:
    return str(label).strip().lower().startswith(('neg', '-', '0', 'false'))


def _parse_points(points: Any) -> Tuple[List[List[float]], List[int]]:
    if points in (None, '', []):
        return [], []
    if isinstance(points, dict) and 'data' in points:
        points = points['data']
    try:
        xy = [[float(p[0]), float(p[1])] for p in points]
        labels = [0 if (len(p) > 2 and _is_negative(p[2])) else 1 for p in points]
    except (TypeError, ValueError, IndexError, KeyError):
        raise UserError(f'clicks are a list of [x, y, label] (label 1 / positive or 0 / negative), got {points!r}'
                        ) from None
    if not all(math.isfinite(v) for p in xy for v in p):
        raise UserError(f'clicks must be finite numbers, got {points!r}')
    return xy, labels


@dataclass
class ImagePrompt:
    texts: List[str]
    boxes: List[List[float]]      # working pixels
    box_labels: List[bool]
    points: List[List[float]]     # working pixels
    point_labels: List[int]
    notes: List[str] = field(default_factory=list)

    def run(self, predictor):
        from sam3_cradio.predictor import Sam3Result

        h, w = predictor.original_size
        if self.points:
            box = next((b for b, pos in zip(self.boxes, self.box_labels) if pos), None)
            multimask = len(self.points) == 1 and box is None  # one click is ambiguous: best of 3 candidates
            r = predictor.predict_points(self.points, self.point_labels, box=box, multimask_output=multimask)
            return Sam3Result(r.masks[:1], r.boxes[:1], r.scores[:1], ['object'] * min(1, len(r)), r.timings)
        if self.boxes:
            results = [predictor.predict_boxes(self.boxes, self.box_labels, text=t) for t in (self.texts or [None])]
            return Sam3Result.merge(results, h, w)
        return predictor.predict_text(self.texts)


def make_image_prompt(loaded: LoadedImage, boxes: Sequence[dict], text: Optional[str], points: Any) -> ImagePrompt:
    """Check every prompt in the original image's pixels (messages name the user's numbers), then scale."""
    from sam3_cradio.predictor import check_box, check_points

    texts = _parse_texts(text)
    W, H = loaded.orig_size
    s = loaded.scale
    bxs, blabels = [], []
    for b in boxes or []:
        try:
            xyxy = check_box([b['xmin'], b['ymin'], b['xmax'], b['ymax']], H, W)
        except (KeyError, TypeError):
            raise UserError(f'a box is a dict with xmin, ymin, xmax, ymax, got {b!r}') from None
        except ValueError as e:
            raise UserError(str(e)) from None
        bxs.append([float(v) * s for v in xyxy])
        blabels.append(not _is_negative(b.get('label', POSITIVE)))
    pts, plabels = _parse_points(points)
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
# Results: raw (kept in the session), filtered and drawn on demand
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Panel:
    """One backbone's raw result (detections above SCORE_FLOOR), masks bit-packed."""
    title: str
    short_title: str
    packed: np.ndarray        # (N, H, ceil(W / 8)) uint8
    width: int
    boxes: np.ndarray         # (N, 4) float32, working pixels
    scores: np.ndarray        # (N,)
    labels: List[str]
    timings: Dict[str, float]
    encoder_cached: bool

    @classmethod
    def from_result(cls, title: str, short_title: str, r, encoder_cached: bool) -> 'Panel':
        order = np.argsort(-r.scores, kind='stable')[:RAW_TOPK]
        order = order[r.scores[order] >= SCORE_FLOOR] if len(order) else order
        masks = r.masks[order]
        return cls(title, short_title, np.packbits(masks, axis=-1), masks.shape[-1], r.boxes[order], r.scores[order],
                   [r.labels[i] for i in order], dict(r.timings), encoder_cached)

    def filtered(self, threshold: float):
        keep = np.nonzero(self.scores >= threshold)[0]
        masks = np.unpackbits(self.packed[keep], axis=-1, count=self.width).astype(bool)
        return masks, self.boxes[keep], self.scores[keep], [self.labels[i] for i in keep]


@dataclass
class RawResult:
    image: np.ndarray
    panels: List[Panel]
    notes: List[str]                                         # shown after the timings
    messages: List[str] = field(default_factory=list)        # markdown, e.g. a comparison that could not load


def render_panel(image: np.ndarray, panel: Panel, threshold: float):
    from sam3_cradio.draw import annotate

    masks, boxes, scores, labels = panel.filtered(threshold)
    drawn = annotate(image, masks, boxes, scores, [f'{lab} {s:.2f}' for lab, s in zip(labels, scores)])
    enc = panel.timings.get('encoder', 0.0)
    enc_txt = f'encoder {enc:.2f} s (cached: not re-run)' if panel.encoder_cached else f'encoder {enc:.2f} s'
    line = (f'**{panel.title}**: {enc_txt} · decoder {panel.timings.get("decoder", 0.0):.2f} s · '
            f'**{len(scores)}** shown at ≥ {threshold:.2f} ({len(panel.scores)} at ≥ {SCORE_FLOOR:.2f})')
    rows = [[panel.short_title, lab, round(float(s), 3), *[round(float(v), 1) for v in b], int(m.sum())]
            for lab, s, b, m in zip(labels, scores, boxes, masks)]
    return drawn, line, rows


TABLE_HEADERS = ['model', 'label', 'score', 'x0', 'y0', 'x1', 'y1', 'mask px']


def _message(text: str, kind: str = 'warning') -> str:
    icon = {'warning': '⚠', 'error': '✖', 'info': 'ℹ', 'ok': '✔'}[kind]
    head, _, rest = str(text).partition('\n')
    body = f'\n\n```\n{rest.strip()}\n```' if rest.strip() else ''
    return f'{icon} {head}{body}'


def weights_message(title: str, error: str) -> str:
    return (f'✖ **{title} cannot be loaded.**\n\n```\n{error.strip()}\n```\n\n'
            f'Put the files in place and select the backbone again (the build is retried on each request): either '
            f'in the Hugging Face cache (`~/.cache/huggingface/hub`, or `$HF_HOME/hub`), or give local paths when '
            f'starting the demo: `--sam3-checkpoint /path/sam3.pt`, '
            f'`--cradio-checkpoint cradio_v4_h=/path/c-radio_v4-h_half.pth.tar`. '
            f'`--tiny` runs the interface without any download.')


# ----------------------------------------------------------------------------------------------------------------
# Video helpers
# ----------------------------------------------------------------------------------------------------------------

def read_video(path: str, max_frames: int, max_side: int) -> Tuple[np.ndarray, float, Tuple[int, int], str]:
    """Frames (T, h, w, 3) uint8 (downscaled to ``max_side``), fps, original (W, H), a note.
    Refuses (UserError) unreadable videos and videos over ``max_frames``."""
    import cv2

    from sam3_cradio.video import iter_video_frames, probe_video

    name = Path(path).name
    try:
        info = probe_video(path)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    if info.num_frames > max_frames:
        raise UserError(f'{name} has {info.num_frames} frames; this demo tracks at most {max_frames} '
                        f'(--max-video-frames). Trim it to a few seconds first.')
    W, H = info.width, info.height
    scale = min(1.0, max_side / max(W, H))
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    frames = []
    try:
        for f in iter_video_frames(path):
            if len(frames) >= max_frames:  # the container's frame count can be wrong
                raise UserError(f'{name} has more than {max_frames} frames; this demo tracks at most {max_frames} '
                                f'(--max-video-frames). Trim it to a few seconds first.')
            if f.shape[:2] != (H, W):
                raise UserError(f'{name}: frame {len(frames)} is {f.shape[1]}x{f.shape[0]}, frame 0 is {W}x{H}')
            frames.append(cv2.resize(f, size, interpolation=cv2.INTER_AREA) if scale < 1 else f)
    except UserError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    note = f'Frames downscaled from {W}x{H} to {size[0]}x{size[1]} (--max-video-side {max_side}).' if scale < 1 else ''
    return np.stack(frames), float(info.fps or 25.0), (W, H), note


def to_browser_video(src: Path, dst_dir: Path) -> Path:
    """Re-encode OpenCV's mp4v output as VP8 WebM, which browsers play (mp4v is not playable in them)."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    dst = dst_dir / (src.stem + '.webm')
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*'VP80'), fps, (w, h))
    if not writer.isOpened():
        cap.release()
        return src  # gradio converts it if ffmpeg is installed
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            writer.write(frame)
    finally:
        writer.release()
        cap.release()
    return dst


def make_example_video(folder: Path) -> Optional[Path]:
    """A 2-second pan over an example photo (VP8 WebM), so the video tab can be tried without a file."""
    import cv2
    from PIL import Image

    if not EXAMPLE_IMAGES:
        return None
    photo = np.asarray(Image.open(EXAMPLE_IMAGES[0]).convert('RGB').resize((320, 320), Image.BILINEAR))
    path = folder / 'pan.webm'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'VP80'), 8, (256, 192))
    if not writer.isOpened():
        return None
    for i in range(16):
        crop = np.ascontiguousarray(photo[40:232, 4 * i:4 * i + 256])
        writer.write(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _draw_points(image: np.ndarray, points: Sequence[Sequence[float]], labels: Sequence[int], scale: float):
    import cv2

    out = np.ascontiguousarray(image.copy())
    r = max(4, round(max(out.shape[:2]) / 120))
    for (x, y), lab in zip(points, labels):
        c = (int(round(x * scale)), int(round(y * scale)))
        color = (34, 197, 94) if lab else (239, 68, 68)
        cv2.circle(out, c, r + 2, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, c, r, color, -1, cv2.LINE_AA)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------------------------

class DemoState:
    """Everything shared between requests: models, encoded images, counters (all thread-safe)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.features = FeatureCache(args.feature_cache)
        self.registry = ModelRegistry(args, on_evict=self.features.drop_model)
        self.backbones = (['cradio_tiny'] if args.tiny else []) + ['cradio_v4_h', 'cradio_v4_so400m', 'pe']
        self.default_key: ModelKey = (args.backbone, args.window_size if args.backbone in _GRID else None, 'image')
        self.encoder_runs = 0
        self._count_lock = threading.Lock()
        self.workdir = Path(tempfile.mkdtemp(prefix='sam3_cradio_demo_'))

    # ---- start-up status ----

    def preload(self) -> threading.Thread:
        def run():
            try:
                self.registry.get(*self.default_key)
            except Exception as e:  # shown in the page by startup_status
                _logger.warning('could not build the default model: %s', e)
        t = threading.Thread(target=run, name='sam3-demo-preload', daemon=True)
        t.start()
        return t

    def startup_status(self) -> Tuple[str, bool]:
        """(markdown, final): the default model's state; final once it is ready or failed."""
        backbone, window, _ = self.default_key
        title = model_title(backbone, window)
        e = self.registry.peek(self.default_key)
        tiny = ('\n\n⚠ **--tiny**: random SAM3 weights on a tiny C-RADIO. Detections and scores are meaningless; '
                'this mode is for trying the interface.') if self.args.tiny else ''
        if e is None or (e.model is None and e.error is None):
            if not self.args.preload and e is None:
                return f'ℹ {title} is built on the first request.{tiny}', True
            return f'… Loading {title} (the first request waits for it).{tiny}', False
        if e.model is not None:
            dev = next(e.model.parameters()).device
            return f'✔ {title} ready on {dev} (built in {e.seconds:.1f} s).{tiny}', True
        return weights_message(title, e.error or 'unknown error'), True

    # ---- image ----

    def _model_entry(self, backbone: str, window: Optional[int], mode: str, progress) -> ModelEntry:
        e = self.registry.peek((backbone, window, mode))
        if e is None or e.model is None:
            progress(0.05, desc=f'building {model_title(backbone, window)} ({mode}): weights load once')
        try:
            return self.registry.get(backbone, window, mode)
        except FileNotFoundError as err:
            raise _WeightsError(weights_message(model_title(backbone, window), str(err))) from None
        except ValueError as err:
            raise _WeightsError(weights_message(model_title(backbone, window), str(err))) from None

    def run_image(self, entry: ModelEntry, loaded: LoadedImage, prompt: ImagePrompt):
        """(Sam3Result, encoder_cached) for one model; the encoded image comes from the cache when it can."""
        from sam3_cradio.predictor import Sam3ImagePredictor

        key = (entry.key, loaded.key)
        with entry.run_lock:
            model = entry.model or self.registry.get(*entry.key).model  # rebuilt if evicted meanwhile
            predictor = Sam3ImagePredictor(model, confidence_threshold=SCORE_FLOOR)
            cached = self.features.get(key)
            if cached is not None:
                _restore_features(predictor, cached)
            else:
                predictor.set_image(loaded.image)
                with self._count_lock:
                    self.encoder_runs += 1
                snap = _snapshot_features(predictor)
                if snap is not None:
                    self.features.put(key, snap)
            try:
                return prompt.run(predictor), cached is not None
            except ValueError as e:
                raise UserError(str(e)) from None


class _WeightsError(Exception):
    """A model could not be built; the message is page markdown."""


def _to_gr(kind: str, text: str):
    """A toast with the message's first line (the full message goes to the status box)."""
    import gradio as gr

    head = text.split('\n', 1)[0].replace('*', '').strip('✖⚠ℹ✔ ')
    gr.Warning(head[:300], duration=15 if kind == 'error' else 10)


def build_app(args: Any = None):
    """The Gradio Blocks of the demo. ``args``: an argparse Namespace from :func:`parse_args`, or an argv list."""
    import gradio as gr

    if args is None or isinstance(args, (list, tuple)):
        args = parse_args(args)
    st = DemoState(args)
    Annotator = annotator_class(int(args.max_image_side), float(args.max_image_megapixels) * 1e6)
    labels = [BACKBONE_LABELS[b] for b in st.backbones]
    default_label = BACKBONE_LABELS[args.backbone]
    default_window = GLOBAL if args.window_size is None else str(args.window_size)

    # ---------------- handlers ----------------

    def on_backbone(label):
        name = LABEL_TO_BACKBONE.get(label, args.backbone)
        choices = window_choices(name)
        return gr.update(choices=choices, value=GLOBAL, interactive=len(choices) > 1)

    def on_compare(label):
        if label in (None, NONE):
            return gr.update(visible=False), gr.update(visible=False, value=None)
        name = LABEL_TO_BACKBONE.get(label, args.backbone)
        choices = window_choices(name)
        return (gr.update(visible=True, choices=choices, value=GLOBAL, interactive=len(choices) > 1),
                gr.update(visible=True))

    def on_image(annot, points, current_key):
        """The annotator changed (new image, or boxes drawn): show the image in the click pad. A new image drops
        the clicks and the previous result (the slider must not re-draw another image's detections)."""
        if not annot or annot.get('image') is None:
            return None, [], None, None, None, None
        loaded: LoadedImage = annot['image']
        key = loaded.key
        if key == current_key:
            pts, labs = _parse_points(points) if points else ([], [])
            return (_draw_points(loaded.image, pts, labs, loaded.scale), points, key, gr.skip(), gr.skip(),
                    gr.skip())
        return loaded.image, [], key, None, None, None

    def add_point(annot, points, label, evt: gr.SelectData):
        if not annot or annot.get('image') is None:
            gr.Warning('Upload an image first')
            return gr.skip(), points
        loaded: LoadedImage = annot['image']
        x, y = evt.index[0] / loaded.scale, evt.index[1] / loaded.scale
        points = list(points or []) + [[round(x, 1), round(y, 1), 1 if label == POSITIVE else 0]]
        pts, labs = _parse_points(points)
        return _draw_points(loaded.image, pts, labs, loaded.scale), points

    # gradio finds the event-data argument by its annotation; with postponed annotations (``from __future__
    # import annotations``) and gradio imported locally, give it the class itself
    add_point.__annotations__['evt'] = gr.SelectData

    def clear_points(annot):
        if not annot or annot.get('image') is None:
            return None, []
        return annot['image'].image, []

    def render(raw: RawResult, threshold: float):
        outs, lines, rows = [], [], []
        for p in raw.panels:
            img, line, r = render_panel(raw.image, p, threshold)
            outs.append(img)
            lines.append(line)
            rows += r
        notes = ''.join(f'\n\nℹ {n}' for n in raw.notes) + ''.join(f'\n\n{m}' for m in raw.messages)
        second = outs[1] if len(outs) > 1 else None
        return outs[0], second, '\n\n'.join(lines) + notes, {'headers': TABLE_HEADERS, 'data': rows}

    def segment(annot, text, points, backbone_label, window_label, compare_label, compare_window, threshold,
                progress=gr.Progress()):
        skip = (gr.skip(), gr.skip())
        try:
            if not annot or annot.get('image') is None:
                raise UserError('Upload an image or pick an example first.')
            loaded: LoadedImage = annot['image']
            prompt = make_image_prompt(loaded, annot.get('boxes') or [], text, points)
            b = _parse_backbone(backbone_label, st.backbones)
            configs = [(b, _parse_window(b, window_label))]
            if compare_label not in (None, '', NONE):
                c = _parse_backbone(compare_label, st.backbones)
                cfg = (c, _parse_window(c, compare_window))
                if cfg != configs[0]:
                    configs.append(cfg)
            threshold = float(threshold if threshold is not None else args.threshold)
            panels, messages = [], []
            for i, (b, w) in enumerate(configs):
                try:
                    entry = st._model_entry(b, w, 'image', progress)
                except _WeightsError as e:
                    if i == 0:
                        raise
                    messages.append(f'Comparison: {e}')  # the main result is still shown
                    continue
                progress((i + 0.5) / len(configs), desc=f'{entry.title}: segmenting')
                result, cached = st.run_image(entry, loaded, prompt)
                panels.append(Panel.from_result(entry.title, entry.short_title, result, cached))
            raw = RawResult(loaded.image, panels, [n for n in [loaded.note] + prompt.notes if n], messages)
            out1, out2, status, table = render(raw, threshold)
            return out1, out2, status, table, raw
        except UserError as e:
            _to_gr('warning', str(e))
            return (*skip, _message(str(e)), gr.skip(), gr.skip())
        except _WeightsError as e:
            _to_gr('error', str(e))
            return (*skip, str(e), gr.skip(), gr.skip())
        except Exception as e:  # a bug or an environment problem (e.g. out of memory): a message, the trace in the log
            _logger.exception('segment failed')
            msg = f'Segmentation failed: {type(e).__name__}: {e}'
            _to_gr('error', msg)
            return (*skip, _message(msg, 'error'), gr.skip(), gr.skip())

    def refilter(raw, threshold):
        if raw is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return render(raw, float(threshold))

    def on_video(video):
        if not video:
            return None, ''
        from sam3_cradio.video import iter_video_frames, probe_video
        try:
            info = probe_video(video)
            frames = iter_video_frames(video)
            first = next(frames)
            frames.close()  # releases the decoder
        except (ValueError, FileNotFoundError, StopIteration) as e:
            _to_gr('warning', str(e))
            return None, _message(str(e))
        msg = (f'{info.num_frames} frames, {info.width}x{info.height}'
               + (f', {info.fps:.3g} fps' if info.fps else '') + '. Optionally drag a box around one object on '
               'the first frame, then press Track.')
        if info.num_frames > args.max_video_frames:
            msg = (f'⚠ {info.num_frames} frames: over the limit of {args.max_video_frames} '
                   f'(--max-video-frames); trim the video first.')
            gr.Warning(msg)
        return {'image': first, 'boxes': []}, msg

    def track(video, text, vannot, backbone_label, window_label, progress=gr.Progress(track_tqdm=True)):
        from sam3_cradio.video import track_video

        try:
            if not video:
                raise UserError('Upload a video first (or pick the example).')
            texts = _parse_texts(text)
            if len(texts) > 1:
                raise UserError('Video tracking takes one noun phrase (SAM3 tracks every instance of it); '
                                f'got {len(texts)}: {texts}')
            frames, fps, (W, H), note = read_video(video, args.max_video_frames, args.max_video_side)
            box = None
            boxes = (vannot or {}).get('boxes') or []
            if boxes:
                from sam3_cradio.predictor import check_box
                b = boxes[0]
                try:
                    xyxy = check_box([b['xmin'], b['ymin'], b['xmax'], b['ymax']], H, W)
                except ValueError as e:
                    raise UserError(str(e)) from None
                s = frames.shape[2] / W
                box = [float(v) * s for v in xyxy]
            if not texts and box is None:
                raise UserError('Give a prompt: a noun phrase (e.g. "person"), or a box on the first frame.')
            b = _parse_backbone(backbone_label, st.backbones)
            entry = st._model_entry(b, _parse_window(b, window_label), 'video', progress)
            out_dir = Path(tempfile.mkdtemp(dir=st.workdir))
            progress(0.1, desc=f'{entry.title}: waiting for the video model')
            with entry.run_lock:
                model = entry.model or st.registry.get(*entry.key).model  # rebuilt if evicted meanwhile
                summary = track_video(model, frames, text=texts[0] if texts else None, box=box,
                                      out=out_dir / 'tracked.mp4', progress=True, fps=fps)
            out = to_browser_video(Path(summary.out), out_dir)
            objs = ', '.join(f'#{i}' for i in summary.object_ids) or 'none'
            status = (f'**{entry.title}**: tracked {summary.frames} frames ({summary.width}x{summary.height}, '
                      f'{summary.fps:.3g} fps) in {summary.seconds:.1f} s '
                      f'({summary.seconds / max(1, summary.frames):.2f} s/frame); objects: {objs}.')
            if note:
                status += f'\n\nℹ {note}'
            return str(out), status
        except UserError as e:
            _to_gr('warning', str(e))
            return gr.skip(), _message(str(e))
        except _WeightsError as e:
            _to_gr('error', str(e))
            return gr.skip(), str(e)
        except Exception as e:  # a bug or an environment problem (e.g. out of memory): a message, the trace in the log
            _logger.exception('track failed')
            msg = f'Tracking failed: {type(e).__name__}: {e}'
            _to_gr('error', msg)
            return gr.skip(), _message(msg, 'error')

    def status_tick():
        text, final = st.startup_status()
        return text, gr.Timer(active=not final)

    # ---------------- layout ----------------

    with gr.Blocks(title='SAM3 × C-RADIOv4') as demo:
        gr.Markdown(
            '## SAM3 × C-RADIOv4\n'
            "Meta's **SAM3** (open-vocabulary detection, segmentation and tracking) with NVIDIA's **C-RADIOv4** "
            "as its vision backbone, or SAM3's own Perception Encoder for comparison. Prompt an image with text, "
            'exemplar boxes or clicks; track objects through a short video.')
        weights_md = gr.Markdown(st.startup_status()[0], elem_id='weights-status')
        with gr.Row():
            backbone = gr.Dropdown(labels, value=default_label, label='Backbone', elem_id='backbone')
            window = gr.Dropdown(window_choices(args.backbone), value=default_window, elem_id='window',
                                 allow_custom_value=True,  # choices follow the backbone; checked in the handler
                                 label='C-RADIO attention window (tokens; global = full attention)',
                                 interactive=len(window_choices(args.backbone)) > 1)

        with gr.Tabs():
            with gr.Tab('Image', id='image'):
                with gr.Row():
                    with gr.Column(scale=1):
                        annot = Annotator(
                            label='Image: upload or pick an example, then drag boxes (positive / negative exemplars)',
                            label_list=[POSITIVE, NEGATIVE], label_colors=[(34, 197, 94), (239, 68, 68)],
                            use_default_label=True, image_type='numpy', sources=['upload', 'clipboard'],
                            box_min_size=4, elem_id='image-input')
                        if EXAMPLE_IMAGES:
                            gr.Examples([[{'image': str(p), 'boxes': []}] for p in EXAMPLE_IMAGES], inputs=[annot],
                                        label='Examples', example_labels=[p.stem for p in EXAMPLE_IMAGES])
                        text = gr.Textbox(label='Text prompt: noun phrases, comma-separated', lines=1,
                                          placeholder='e.g. cup, spoon', elem_id='text-prompt')
                        with gr.Accordion('Point clicks: segment one object, SAM-style', open=False):
                            with gr.Row():
                                click_label = gr.Radio([POSITIVE, NEGATIVE], value=POSITIVE, label='Next click')
                                clear_btn = gr.Button('Clear clicks', size='sm')
                            click_img = gr.Image(label='Click on the object (clicks override text prompts)',
                                                 interactive=False, type='numpy', format='png', elem_id='click-pad')
                            points = gr.JSON(value=[], label='Clicks: [x, y, label] in image pixels')
                        with gr.Row():
                            compare = gr.Dropdown([NONE] + labels, value=NONE, label='Compare with (side by side)',
                                                  elem_id='compare')
                            compare_window = gr.Dropdown([GLOBAL], value=GLOBAL, label='its window', visible=False,
                                                         allow_custom_value=True)
                        run_btn = gr.Button('Segment', variant='primary', elem_id='segment-button')
                    with gr.Column(scale=1):
                        threshold = gr.Slider(SCORE_FLOOR, 1.0, value=max(SCORE_FLOOR, args.threshold), step=0.01,
                                              label='Confidence threshold (only re-filters: no model call)',
                                              elem_id='threshold')
                        with gr.Row():
                            out1 = gr.Image(label='Result', type='numpy', format='png', interactive=False,
                                            elem_id='output-image')
                            out2 = gr.Image(label='Comparison', type='numpy', format='png', interactive=False,
                                            visible=False, elem_id='compare-image')
                        status = gr.Markdown(label='Status', elem_id='image-status')
                        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, label='Detections',
                                             max_height=300)
                raw = gr.State(None)
                image_key_state = gr.State(None)

            with gr.Tab('Video', id='video'):
                with gr.Row():
                    with gr.Column(scale=1):
                        video = gr.Video(label='Video (short clips: every frame is processed)', sources=['upload'],
                                         include_audio=True, elem_id='video-input')
                        example_video = make_example_video(st.workdir)
                        if example_video is not None:
                            gr.Examples([[str(example_video)]], inputs=[video], label='Example',
                                        example_labels=['pan over a photo'])
                        vtext = gr.Textbox(label='Text prompt: one noun phrase (every instance is tracked)',
                                           placeholder='e.g. person', elem_id='video-text')
                        vannot = Annotator(label='First frame: optionally drag a box around one object',
                                                 label_list=['object'], use_default_label=True, single_box=True,
                                                 image_type='numpy', sources=None, box_min_size=4,
                                                 elem_id='first-frame')
                        track_btn = gr.Button('Track', variant='primary', elem_id='track-button')
                    with gr.Column(scale=1):
                        vout = gr.Video(label='Tracked', interactive=False, elem_id='video-output')
                        vstatus = gr.Markdown(
                            f'Videos up to {args.max_video_frames} frames; frames larger than '
                            f'{args.max_video_side} px are downscaled.', label='Status', elem_id='video-status')

        with gr.Accordion('About the weights and this demo', open=False):
            gr.Markdown(
                '- **SAM3 weights** (`sam3.pt`, gated Hugging Face repo `facebook/sam3`) and **C-RADIOv4 weights** '
                '(`nvidia/C-RADIOv4-H`, `nvidia/C-RADIOv4-SO400M`) come from the Hugging Face cache, or from '
                '`--sam3-checkpoint` / `--cradio-checkpoint BACKBONE=PATH`.\n'
                '- The confidence slider filters the last result; a new prompt on the same image reuses its '
                'encoded features (the encoder time shows *cached*).\n'
                '- Timings are measured per request: encoder = image backbone + neck, decoder = prompt encoding, '
                'detection and masks.')

        timer = gr.Timer(2.0, active=not st.startup_status()[1])

        # ---------------- events ----------------
        backbone.change(on_backbone, backbone, window, queue=False, api_name=False)
        compare.change(on_compare, compare, [compare_window, out2], queue=False, api_name=False)
        annot.change(on_image, [annot, points, image_key_state],
                     [click_img, points, image_key_state, out1, out2, raw], concurrency_limit=None, api_name=False)
        click_img.select(add_point, [annot, points, click_label], [click_img, points], concurrency_limit=None,
                         api_name=False)
        clear_btn.click(clear_points, annot, [click_img, points], concurrency_limit=None, api_name=False)
        seg_inputs = [annot, text, points, backbone, window, compare, compare_window, threshold]
        seg_outputs = [out1, out2, status, table, raw]
        run_btn.click(segment, seg_inputs, seg_outputs, api_name='segment', concurrency_limit=args.concurrency,
                      concurrency_id='image')
        text.submit(segment, seg_inputs, seg_outputs, api_name=False, concurrency_limit=args.concurrency,
                    concurrency_id='image')
        threshold.change(refilter, [raw, threshold], [out1, out2, status, table], api_name='refilter',
                         concurrency_limit=None, trigger_mode='always_last', show_progress='hidden')
        video.change(on_video, video, [vannot, vstatus], concurrency_limit=None, api_name=False)
        track_btn.click(track, [video, vtext, vannot, backbone, window], [vout, vstatus], api_name='track',
                        concurrency_limit=1, concurrency_id='video')
        demo.load(status_tick, None, [weights_md, timer], api_name='status')
        timer.tick(status_tick, None, [weights_md, timer], api_name=False)

    demo.queue(default_concurrency_limit=args.concurrency)
    demo.sam3_demo = st  # for tests and embedding: the shared state (models, feature cache, counters)
    if args.preload:
        st.preload()
    return demo


def launch_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """``demo.launch`` arguments for ``args`` (host, port, share, limits, styling)."""
    import gradio as gr

    return dict(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                max_file_size=args.max_file_size, css=_CSS, theme=gr.themes.Soft(), ssr_mode=False,
                allowed_paths=[str(p.parent) for p in EXAMPLE_IMAGES[:1]])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``sam3-cradio demo [options]``: build the app and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = parse_args(argv)
    try:
        import gradio  # noqa: F401
        import gradio_image_annotation  # noqa: F401
    except ImportError as e:
        print(f'error: the demo needs gradio and gradio-image-annotation ({e}): pip install -e ".[demo]"',
              file=sys.stderr)
        return 2
    demo = build_app(args)
    try:
        demo.launch(**launch_kwargs(args))
    finally:
        shutil.rmtree(demo.sam3_demo.workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
