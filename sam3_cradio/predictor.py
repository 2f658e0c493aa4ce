"""Image API: SAM3's ``Sam3Processor`` ergonomics on any backbone, results in the original image's pixels.

    model = build_sam3(backbone="cradio_v4_so400m", window_size=12)
    predictor = Sam3ImagePredictor(model)
    predictor.set_image("photo.jpg")
    cats = predictor.predict_text("cat")                       # open-vocabulary detection + segmentation
    dogs = predictor.predict_boxes([[10, 20, 200, 240]])       # exemplar box (positive), optionally with text
    one = predictor.predict_points([[120, 80]], labels=[1])    # SAM-style interactive instance segmentation

Prompt rules (checked before any model call): text must be non-empty; boxes are xyxy pixels, clipped to the image,
and a box with no area inside the image is an error; points must lie inside the image. SAM3's text encoder reads
32 tokens, its start and end tokens included, so 30 of each phrase: a longer phrase runs with its end cut off and a
:class:`TextTruncatedWarning` names the part that was ignored (:func:`text_overflow` checks a phrase beforehand).
Exemplar boxes all go into one prompt, decoded once, however many there are.
"""
from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .images import ImageLike, load_image

if TYPE_CHECKING:
    import supervision as sv

__all__ = ['Sam3Result', 'ImageFeatures', 'Sam3ImagePredictor', 'check_box', 'check_points', 'check_text', 'masks_to_boxes',
           'TextTruncatedWarning', 'TextOverflow', 'text_overflow', 'warn_if_truncated']


@dataclass
class Sam3Result:
    """N detections in the original image's pixel space.

    Attributes:
        masks: (N, H, W) bool.
        boxes: (N, 4) float32 xyxy pixels, inside the image.
        scores: (N,) float32 in [0, 1].
        labels: N prompt strings (the text that found each detection; 'visual' for box-only, 'point' for clicks).
        timings: seconds spent per stage, e.g. {'encoder': 1.2, 'decoder': 0.1}.

    :meth:`to_detections` gives the same detections as ``supervision.Detections`` (drawing, filtering, merging,
    export) and :meth:`from_detections` comes back.
    """
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def to_detections(self) -> sv.Detections:
        """The detections as ``supervision.Detections``.

        ``xyxy`` = boxes, ``mask`` = masks, ``confidence`` = scores, ``class_id`` = the index of each detection's
        label among this result's distinct labels (in order of first appearance), ``data['class_name']`` = labels.
        """
        import supervision as sv

        n = len(self)
        if len(self.labels) != n:
            raise ValueError(f'this Sam3Result has {n} detections but {len(self.labels)} labels; give one label each')
        names = list(dict.fromkeys(self.labels))
        return sv.Detections(
            xyxy=np.asarray(self.boxes, dtype=np.float32).reshape(n, 4),
            mask=np.asarray(self.masks, dtype=bool),
            confidence=np.asarray(self.scores, dtype=np.float32).reshape(n),
            class_id=np.array([names.index(lab) for lab in self.labels], dtype=int),
            data={'class_name': np.array(self.labels, dtype=str)},
        )

    @classmethod
    def from_detections(cls, detections: sv.Detections, image_size: tuple[int, int] | None = None,
                        timings: dict[str, float] | None = None) -> Sam3Result:
        """A result from ``supervision.Detections`` that carry masks.

        Labels come from ``data['class_name']``, else the class ids as strings, else 'object'; scores from
        ``confidence`` (1.0 where there is none). ``image_size`` (H, W) gives the mask size of an empty result
        whose detections have no masks (``Detections.empty()``, ``Detections.merge`` of empty ones).
        """
        n = len(detections)
        if detections.mask is not None:
            masks = np.asarray(detections.mask, dtype=bool)
        elif n == 0 and image_size is not None:
            masks = np.zeros((0, *image_size), bool)
        else:
            raise ValueError('Sam3Result needs masks, and these detections have none; give detections with '
                             'masks (or image_size for an empty result)')
        if 'class_name' in detections.data:
            labels = [str(x) for x in detections.data['class_name']]
        elif detections.class_id is not None:
            labels = [str(int(c)) for c in detections.class_id]
        else:
            labels = ['object'] * n
        scores = np.ones(n, np.float32) if detections.confidence is None else detections.confidence
        return cls(masks, np.asarray(detections.xyxy, dtype=np.float32).reshape(n, 4),
                   np.asarray(scores, dtype=np.float32).reshape(n), labels, dict(timings or {}))

    @classmethod
    def merge(cls, results: Sequence[Sam3Result], height: int, width: int) -> Sam3Result:
        """All detections of ``results`` in one result (``supervision.Detections.merge``), e.g. several phrases on
        one image; an empty list gives an empty (0, height, width) result. The encoder ran once for all of them,
        so its time is the largest; the decoders' times add up."""
        import supervision as sv

        timings: dict[str, float] = {}
        for r in results:
            for k, v in r.timings.items():
                timings[k] = max(timings.get(k, 0.0), v) if k == 'encoder' else timings.get(k, 0.0) + v
        merged = sv.Detections.merge([r.to_detections() for r in results])
        return cls.from_detections(merged, (height, width), timings)

    def filter(self, min_score: float) -> Sam3Result:
        """Detections scoring at least ``min_score`` (no model call), selected through ``supervision.Detections``."""
        d = self.to_detections()
        return Sam3Result.from_detections(d[d.confidence >= min_score], self.masks.shape[1:], self.timings)


def check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'the text prompt is empty ({text!r}); give a noun phrase such as "cat"')
    return text.strip()


class TextTruncatedWarning(UserWarning):
    """A text prompt longer than SAM3's text encoder reads: the model ran on its beginning only."""


@dataclass(frozen=True)
class TextOverflow:
    """How a phrase overflows the text encoder (:func:`text_overflow`).

    Attributes:
        text: the phrase.
        tokens: its BPE tokens, without the start and end tokens.
        limit: the tokens the encoder reads (its context length minus the start and end tokens).
        context_length: the encoder's context length (32 in SAM3).
        dropped: the ignored end of the phrase as the tokenizer reads it (lower case), from the first word that is
            not read in full.
    """
    text: str
    tokens: int
    limit: int
    context_length: int
    dropped: str

    def message(self) -> str:
        return (f'text prompt {self.text!r} is {self.tokens} tokens long, but SAM3\'s text encoder reads '
                f'{self.limit} ({self.context_length} with its start and end tokens), so it ignored '
                f'{self.dropped!r}. Shorten the phrase: SAM3 expects a short noun phrase')


def _text_encoder(model: torch.nn.Module) -> torch.nn.Module | None:
    """SAM3's ``VETextEncoder`` of an image model (``backbone``) or a video model (``detector.backbone``)."""
    for owner in (model, getattr(model, 'detector', None)):
        backbone = getattr(owner, 'backbone', None)
        encoder = getattr(backbone, 'language_backbone', None)
        if encoder is not None and hasattr(encoder, 'tokenizer') and hasattr(encoder, 'context_length'):
            return encoder
    return None


def _dropped_words(tokenizer, text: str, limit: int) -> str:
    """The end of ``text`` past ``limit`` tokens, from the first word not read in full (sam3's tokenizer: clean,
    split into words by its pattern, BPE per word); the decoded tokens where the tokenizer is another one."""
    clean, pat = getattr(tokenizer, 'clean_fn', None), getattr(tokenizer, 'pat', None)
    byte_encoder, bpe = getattr(tokenizer, 'byte_encoder', None), getattr(tokenizer, 'bpe', None)
    if None not in (clean, pat, byte_encoder, bpe):
        cleaned = clean(text)
        n = 0
        for m in pat.finditer(cleaned):
            n += len(bpe(''.join(byte_encoder[b] for b in m.group(0).encode('utf-8'))).split(' '))
            if n > limit:
                return cleaned[m.start():].strip()
    return tokenizer.decode(tokenizer.encode(text)[limit:]).strip()


@functools.cache
def _default_text_tokenizer() -> tuple[object, int]:
    """(tokenizer, context length) of every SAM3 that ``build_sam3`` makes with the default vocabulary: sam3's
    ``SimpleTokenizer`` on :func:`sam3_cradio.compat.bpe_path`, and ``VETextEncoder``'s default context (32)."""
    import inspect

    from . import compat

    compat.import_sam3()
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer

    context = inspect.signature(VETextEncoder).parameters['context_length'].default
    return SimpleTokenizer(bpe_path=compat.bpe_path()), int(context)


def text_overflow(text: str, model: torch.nn.Module | None = None) -> TextOverflow | None:
    """How ``text`` (one phrase) overflows SAM3's text encoder; None when it fits.

    sam3's tokenizer (``sam3/model/tokenizer_ve.py``) puts a start and an end token around the phrase's BPE tokens
    and cuts the result to the encoder's context length (``VETextEncoder.context_length``, 32), keeping the end
    token: a phrase is read up to 30 tokens, the rest is ignored without a word.

    Args:
        text: one phrase.
        model: an image or video model whose tokenizer and context length to use; None: those every model built
            by ``build_sam3`` with the default vocabulary has (no model needed, e.g. to check before building one).
    """
    encoder = _text_encoder(model) if model is not None else None
    if encoder is not None:
        tokenizer, context = encoder.tokenizer, int(encoder.context_length)
    else:
        tokenizer, context = _default_text_tokenizer()
    limit = context - 2
    n = len(tokenizer.encode(text))
    if n <= limit:
        return None
    return TextOverflow(text, n, limit, context, _dropped_words(tokenizer, text, limit))


def warn_if_truncated(text: str, model: torch.nn.Module | None = None, stacklevel: int = 2) -> TextOverflow | None:
    """Warn (:class:`TextTruncatedWarning`) when ``text`` overflows the text encoder (:func:`text_overflow`);
    returns the overflow. ``stacklevel`` as for ``warnings.warn``, counted from the caller of this function."""
    overflow = text_overflow(text, model)
    if overflow is not None:
        warnings.warn(overflow.message(), TextTruncatedWarning, stacklevel=stacklevel + 1)
    return overflow


def check_box(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """An xyxy pixel box clipped to the image; raises if it is malformed or has no area inside the image."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ValueError(f'a box is 4 finite numbers x0 y0 x1 y1 in pixels, got {box!r}')
    if b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f'box {b.tolist()} has zero or negative area: need x1 > x0 and y1 > y0 (xyxy pixels)')
    clipped = np.array([np.clip(b[0], 0, width), np.clip(b[1], 0, height),
                        np.clip(b[2], 0, width), np.clip(b[3], 0, height)])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(f'box {b.tolist()} lies outside the {width}x{height} image')
    return clipped.astype(np.float32)


def check_points(points: Sequence[Sequence[float]], labels: Sequence[int], height: int, width: int):
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0 or not np.isfinite(p).all():
        raise ValueError(f'points are a non-empty list of (x, y) pixel pairs, got {points!r}')
    lab = np.asarray(labels).reshape(-1)
    if len(lab) != len(p) or not np.isin(lab, (0, 1)).all():
        raise ValueError(f'need one label per point, 1 (positive) or 0 (negative); got {labels!r} for {len(p)} points')
    outside = (p[:, 0] < 0) | (p[:, 0] > width) | (p[:, 1] < 0) | (p[:, 1] > height)
    if outside.any():
        raise ValueError(f'points {p[outside].tolist()} lie outside the {width}x{height} image')
    return p.astype(np.float32), lab.astype(np.int32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 ``[min x, min y, max x + 1, max y + 1]``; an empty mask gives zeros."""
    masks = np.asarray(masks, dtype=bool)
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    if n == 0:
        return boxes
    cols, rows = masks.any(axis=1), masks.any(axis=2)  # (N, W), (N, H)
    has = cols.any(axis=1)
    w, h = cols.shape[1], rows.shape[1]
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - np.argmax(rows[:, ::-1], axis=1)
    boxes[~has] = 0
    return boxes


@dataclass
class ImageFeatures:
    """An encoded image, reusable across predictors of the same model (e.g. a per-image cache in a server)."""
    backbone_out: dict
    original_size: tuple[int, int]
    encoder_seconds: float


class Sam3ImagePredictor:
    """Set an image once, then prompt it with text, boxes or points; the image features are computed once."""

    def __init__(self, model: torch.nn.Module, confidence_threshold: float = 0.5, autocast: bool = True) -> None:
        from sam3.model.sam3_image_processor import Sam3Processor

        cfg = getattr(model, 'sam3_cradio_cfg', None)
        if cfg is None or cfg.get('mode') != 'image':
            raise ValueError('Sam3ImagePredictor needs an image model from build_sam3(..., mode="image")')
        self.model = model
        self.device = next(model.parameters()).device
        self.image_size = cfg['image_size']
        # bf16 autocast on CUDA, where it speeds up the trunk, and wherever the model was built with dtype='bf16'
        # (its trunk weights are bf16 already); a float32 model on the CPU stays float32
        self._autocast = autocast and (self.device.type == 'cuda' or cfg.get('dtype') == 'bf16')
        self.processor = Sam3Processor(model, resolution=self.image_size, device=str(self.device),
                                       confidence_threshold=confidence_threshold)
        self._state: dict | None = None
        self._hw = (0, 0)
        self.encoder_seconds = 0.0

    def _amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self._autocast else nullcontext()

    @property
    def confidence_threshold(self) -> float:
        return self.processor.confidence_threshold

    @confidence_threshold.setter
    def confidence_threshold(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f'confidence_threshold must be in [0, 1], got {value}')
        self.processor.confidence_threshold = float(value)

    def set_image(self, image: ImageLike) -> Sam3ImagePredictor:
        """Encode an image (path, PIL, or array; grayscale, RGBA and 16-bit are converted to 8-bit RGB).

        It is resized once, straight to the backbone's resolution (1152 px for C-RADIOv4, 1008 for PE).
        """
        pil = load_image(image)
        t0 = time.perf_counter()
        with self._amp():
            self._state = self.processor.set_image(pil)
        self._sync()
        self.encoder_seconds = time.perf_counter() - t0
        self._hw = (pil.height, pil.width)
        return self

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the image set last."""
        return self._hw

    def features(self) -> ImageFeatures:
        """The encoded image, to restore later with :meth:`set_features` without running the encoder again."""
        state = self._require_image()
        return ImageFeatures(dict(state['backbone_out']), self._hw, self.encoder_seconds)

    def set_features(self, features: ImageFeatures) -> Sam3ImagePredictor:
        """Use an image encoded earlier by :meth:`features`. Prompts add and drop top-level entries of
        ``backbone_out`` (the text features) but never change its tensors, so a shallow copy keeps users apart."""
        h, w = features.original_size
        self._state = {'original_height': h, 'original_width': w, 'backbone_out': dict(features.backbone_out)}
        self._hw = (h, w)
        self.encoder_seconds = features.encoder_seconds
        return self

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def _require_image(self) -> dict:
        if self._state is None:
            raise RuntimeError('call set_image(image) before prompting')
        return self._state

    def _grounding_result(self, state: dict, label: str, seconds: float) -> Sam3Result:
        scores = state['scores'].float().cpu().numpy()
        masks = state['masks'][:, 0].cpu().numpy() if len(scores) else np.zeros((0, *self._hw), bool)
        h, w = self._hw
        boxes = state['boxes'].float().cpu().numpy().reshape(-1, 4)
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        return Sam3Result(masks.astype(bool), boxes, scores.astype(np.float32), [label] * len(scores),
                          {'encoder': self.encoder_seconds, 'decoder': seconds})

    def predict_text(self, prompts: str | Sequence[str]) -> Sam3Result:
        """Segment every instance of each noun phrase; a string may hold several, comma-separated."""
        state = self._require_image()
        if isinstance(prompts, str):
            prompts = [p for p in prompts.split(',')] if ',' in prompts else [prompts]
        if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Sequence) or not prompts:
            raise ValueError(f'give at least one noun phrase: predict_text("cat") or predict_text(["cat", "dog"]), '
                             f'got {prompts!r}')
        prompts = [check_text(p) for p in prompts]
        for prompt in prompts:  # before any model call: the warning points at the caller's line
            warn_if_truncated(prompt, self.model, stacklevel=2)
        results = []
        for prompt in prompts:
            t0 = time.perf_counter()
            self.processor.reset_all_prompts(state)
            with self._amp():
                out = self.processor.set_text_prompt(prompt, state)
            self._sync()
            results.append(self._grounding_result(out, prompt, time.perf_counter() - t0))
        return Sam3Result.merge(results, *self._hw)

    def predict_boxes(
            self,
            boxes: Sequence[Sequence[float]],
            labels: Sequence[bool] | None = None,
            text: str | None = None,
    ) -> Sam3Result:
        """Exemplar boxes (xyxy pixels; label True = positive, False = negative), optionally with a text prompt:
        SAM3 segments every instance like the positive boxes.

        All boxes go into one geometric prompt and the grounding decoder runs once, whatever their number: the
        result is the one sam3's ``Sam3Processor`` gives after its last ``add_geometric_prompt`` of the same boxes
        (which decodes again after every box)."""
        state = self._require_image()
        h, w = self._hw
        boxes = [check_box(b, h, w) for b in boxes]
        if not boxes:
            raise ValueError('predict_boxes needs at least one box')
        labels = [True] * len(boxes) if labels is None else [bool(x) for x in labels]
        if len(labels) != len(boxes):
            raise ValueError(f'{len(labels)} labels for {len(boxes)} boxes')
        if text is not None:
            text = check_text(text)
            warn_if_truncated(text, self.model, stacklevel=2)
        xyxy = np.stack(boxes).astype(np.float64)
        # Sam3Processor takes normalised (cx, cy, w, h), sequence first: (N boxes, batch 1, 4)
        norm = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2 / w, (xyxy[:, 1] + xyxy[:, 3]) / 2 / h,
                         (xyxy[:, 2] - xyxy[:, 0]) / w, (xyxy[:, 3] - xyxy[:, 1]) / h], axis=1)
        device = self.processor.device
        t0 = time.perf_counter()
        self.processor.reset_all_prompts(state)
        with torch.inference_mode(), self._amp():
            # what set_text_prompt / add_geometric_prompt set up, without their decoder pass per call; box-only
            # prompts use the text "visual", as add_geometric_prompt does
            state['backbone_out'].update(self.model.backbone.forward_text([text or 'visual'], device=device))
            prompt = self.model._get_dummy_prompt()
            prompt.append_boxes(torch.tensor(norm, dtype=torch.float32, device=device).view(len(boxes), 1, 4),
                                torch.tensor(labels, dtype=torch.bool, device=device).view(len(boxes), 1))
            state['geometric_prompt'] = prompt
            out = self.processor._forward_grounding(state)
        self._sync()
        return self._grounding_result(out, text if text else 'visual', time.perf_counter() - t0)

    def predict_points(
            self,
            points: Sequence[Sequence[float]] | None = None,
            labels: Sequence[int] | None = None,
            box: Sequence[float] | None = None,
            multimask_output: bool = True,
    ) -> Sam3Result:
        """SAM-style interactive segmentation of one object from clicks (x, y pixels; label 1 positive,
        0 negative) and/or one box. Returns 3 candidate masks (best first) with ``multimask_output``, else 1."""
        state = self._require_image()
        if self.model.inst_interactive_predictor is None:
            raise ValueError('this model has no interactive predictor: build it with build_sam3(..., interactive=True)')
        h, w = self._hw
        kwargs = {'multimask_output': multimask_output}
        if points is not None:
            if labels is None:
                labels = [1] * len(points)
            kwargs['point_coords'], kwargs['point_labels'] = check_points(points, labels, h, w)
        if box is not None:
            kwargs['box'] = check_box(box, h, w)
        if points is None and box is None:
            raise ValueError('predict_points needs points, a box, or both')
        t0 = time.perf_counter()
        with torch.inference_mode(), self._amp():
            masks, ious, _ = self.model.predict_inst(state, **kwargs)
        self._sync()
        masks = np.asarray(masks).astype(bool).reshape(-1, h, w)
        ious = np.asarray(ious, dtype=np.float32).reshape(-1)
        order = np.argsort(-ious, kind='stable')
        masks, ious = masks[order], ious[order]
        return Sam3Result(masks, masks_to_boxes(masks), np.clip(ious, 0, 1), ['point'] * len(ious),
                          {'encoder': self.encoder_seconds, 'decoder': time.perf_counter() - t0})
