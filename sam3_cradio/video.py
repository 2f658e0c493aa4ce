"""Video API: SAM2/SAM3 video-predictor ergonomics on sam3's own video model, results in the video's own pixels.

    model = build_sam3('cradio_v4_h', mode='video')
    predictor = Sam3VideoPredictor(model)
    predictor.open('clip.mp4')                        # a video file, a folder of frames, or a list of images
    predictor.add_text(0, 'person')                   # open-vocabulary: every person, tracked (SAM3)
    predictor.add_box(12, [40, 30, 200, 310])         # one object from a box on frame 12 (SAM2-style)
    predictor.add_points(12, [[120, 80]], [1], obj_id=7)
    for r in predictor.propagate('both'):             # VideoFrameResult per frame
        print(r.frame_idx, r.obj_ids, r.masks.shape, r.boxes)

    predictor.reset()
    predictor.add_mask(0, 1, first_frame_mask)        # semi-supervised: an (H, W) bool mask prompts object 1
    for r in predictor.propagate():
        ...

The model is sam3's ``Sam3VideoInferenceWithInstanceInteractivity`` as built by ``build_sam3(..., mode='video')``
(detector + SAM2-style tracker, unchanged); this module only converts inputs and outputs and steers sam3's
propagation. Rules (checked before any model call):

- Coordinates are pixels of the original video frame: boxes ``[x0, y0, x1, y1]``, points ``(x, y)``; masks are
  (H, W) booleans at the video's resolution.
- A box partly outside the frame is clipped to it; a box with zero area, or none inside the frame, is an error.
  Points must lie inside the frame (0 <= x <= W, 0 <= y <= H).
- Text prompts are global (SAM3 semantics): ``add_text`` starts over, dropping every object and prompt added
  before it. Add box and point prompts after the text prompt.
- ``add_box`` / ``add_points`` create (``obj_id=None``: a new id) or refine one object in the tracker, like SAM2's
  ``add_new_points_or_box``. On the same frame and object, points accumulate and a new box replaces the old one
  (``clear=True`` starts that frame's prompts for the object afresh).
- ``add_mask`` is SAM2's ``add_new_mask``: sam3's video model takes no mask prompts, so a session of mask prompts
  runs sam3's tracker alone, the way SAM2's video predictor and its VOS evaluation do (one tracker state for every
  object, features from the shared backbone's SAM2 neck). Masks do not mix with text, box or point prompts in one
  session (``reset()`` between them), and every object's mask comes before the first ``propagate``.
- Results: masks (N, H, W) bool at the original resolution, boxes (N, 4) float32 xyxy pixels
  (``[min x, min y, max x + 1, max y + 1]`` of the mask, so inside ``[0, W] x [0, H]``), scores (N,) float32
  (the detection score; 1.0 for objects from clicks, boxes and masks), obj_ids (N,) int64. Objects whose mask is
  empty on a frame are left out of that frame, as sam3 does.

Memory: ``open`` only checks the frames. sam3's session (made on the first text, box or point prompt) keeps every
frame resized to the model's square input (``image_size``) in RAM (float16), like sam3; a mask session reads the
frames again when the tracker needs them and keeps the features of the last two (a video file is decoded once
into RAM for it, since it cannot be read by frame index).
"""
from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import compat
from .frames import (
    UnreadableVideoError,
    VideoInfo,
    VideoLike,
    frame_names,
    frame_reader,
    iter_video_frames,
    list_frame_files,
    probe_video,
    video_fps,
)
from .predictor import check_box, check_points, check_text, masks_to_boxes, warn_if_truncated
from .track_outputs import VideoFrameResult

__all__ = [
    'Sam3VideoPredictor', 'VideoFrameResult', 'VideoNotOpenError', 'masks_to_boxes',
    # frame I/O lives in sam3_cradio.frames; here too, where the video API's users import it from
    'VideoInfo', 'VideoLike', 'UnreadableVideoError', 'frame_names', 'list_frame_files', 'iter_video_frames',
    'probe_video',
]

_logger = logging.getLogger(__name__)

DIRECTIONS = ('forward', 'backward', 'both')


class VideoNotOpenError(RuntimeError, ValueError):
    """A prompt or propagation was requested before :meth:`Sam3VideoPredictor.open` (a RuntimeError and a
    ValueError, so either ``except`` style catches it)."""


# --------------------------------------------------------------------------------------------------------------
# Mask prompts: sam3's tracker alone, as SAM2's video predictor runs it
# --------------------------------------------------------------------------------------------------------------

class _TrackerFeatures:
    """The tracker's ``inference_state['cached_features']`` for a mask session: ``get(frame_idx)`` returns
    ``(image, {'tracker_backbone_out': ...})`` the way sam3's video model caches them, computing a frame on first
    access and keeping the last ``keep``.

    The features are exactly those sam3's video model gives its tracker (``sam3_video_base.py``,
    ``run_backbone_and_detection``): the frame resized (PIL bilinear) to the model's square input, scaled to [-1, 1]
    in float32, the shared backbone's SAM2-style neck, then the tracker's ``conv_s0`` / ``conv_s1`` on the two
    high-resolution maps.
    """

    def __init__(self, model: torch.nn.Module, read_frame: Callable[[int], np.ndarray], num_frames: int, size: int,
                 device: torch.device, frame_size: tuple[int, int] | None = None, keep: int = 2) -> None:
        self.model, self.read_frame, self.num_frames = model, read_frame, int(num_frames)
        self.size, self.device, self.frame_size, self.keep = int(size), device, frame_size, keep
        self._cache: OrderedDict[int, tuple[torch.Tensor, dict[str, Any]]] = OrderedDict()

    def image(self, frame_idx: int) -> torch.Tensor:
        """Frame ``frame_idx`` as the model's (3, size, size) float32 input, normalised with mean = std = 0.5."""
        rgb = self.read_frame(frame_idx)
        if self.frame_size is not None and rgb.shape[:2] != tuple(self.frame_size):
            h, w = self.frame_size
            raise ValueError(f'frame {frame_idx} is {rgb.shape[1]}x{rgb.shape[0]} but the video is {w}x{h}; all '
                             f'frames of a video must have the same size')
        a = np.asarray(Image.fromarray(rgb).resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255.0
        return (torch.from_numpy(a).permute(2, 0, 1) - 0.5) / 0.5

    def get(self, frame_idx: int, default: Any = None) -> Any:
        if not isinstance(frame_idx, int) or not 0 <= frame_idx < self.num_frames:
            return default
        if frame_idx in self._cache:
            self._cache.move_to_end(frame_idx)
            return self._cache[frame_idx]
        image = self.image(frame_idx).to(self.device)
        out = self.model.detector.backbone.forward_image(image[None])['sam2_backbone_out']
        decoder = self.model.tracker.sam_mask_decoder
        fpn = list(out['backbone_fpn'])
        fpn[0] = decoder.conv_s0(fpn[0])  # as sam3_video_base.py does before caching
        fpn[1] = decoder.conv_s1(fpn[1])
        tracker_out = {'vision_features': fpn[-1], 'vision_pos_enc': list(out['vision_pos_enc']), 'backbone_fpn': fpn}
        entry = (image, {'tracker_backbone_out': tracker_out})
        self._cache[frame_idx] = entry
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return entry

    def clear(self) -> None:
        self._cache.clear()


class _MaskSession:
    """One ``Sam3TrackerPredictor`` state holding every mask-prompted object (SAM2's ``init_state`` /
    ``add_new_mask`` / ``propagate_in_video``), with the features from :class:`_TrackerFeatures`."""

    def __init__(self, model: torch.nn.Module, read_frame: Callable[[int], np.ndarray], num_frames: int,
                 height: int, width: int, non_overlap: Callable[[], bool]) -> None:
        self.tracker = model.tracker
        device = next(model.parameters()).device
        self.features = _TrackerFeatures(model, read_frame, num_frames, int(model.sam3_cradio_cfg['image_size']),
                                        device, (height, width))
        # bf16 on CUDA, as SAM2's VOS evaluation runs, and for a model built with dtype='bf16'; elsewhere float32
        # (compat casts the tracker's bf16 memory)
        bf16 = device.type == 'cuda' or model.sam3_cradio_cfg.get('dtype') == 'bf16'
        self._amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        self._non_overlap = non_overlap
        with self._run():
            self.state = self.tracker.init_state(video_height=height, video_width=width, num_frames=num_frames,
                                                 cached_features=self.features)

    @contextlib.contextmanager
    def _run(self) -> Iterator[None]:
        with torch.inference_mode(), self._amp(), compat.tracker_non_overlap_output(self.tracker, self._non_overlap()):
            yield

    @property
    def obj_ids(self) -> list[int]:
        return [int(o) for o in self.state['obj_ids']]

    @property
    def started(self) -> bool:
        return bool(self.state['tracking_has_started'])

    def add(self, frame_idx: int, obj_id: int, mask: np.ndarray) -> tuple[list[int], torch.Tensor]:
        with self._run():
            _, obj_ids, _, video_res = self.tracker.add_new_mask(self.state, frame_idx, obj_id, torch.from_numpy(mask))
        return list(obj_ids), video_res

    def remove(self, obj_id: int) -> None:
        with self._run():
            self.tracker.remove_object(self.state, obj_id, strict=True, need_output=False)

    def propagate(self, start: int, max_track: int | None, reverse: bool
                  ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        gen = self.tracker.propagate_in_video(self.state, start_frame_idx=start, max_frame_num_to_track=max_track,
                                              reverse=reverse, tqdm_disable=True, propagate_preflight=True)
        while True:
            with self._run():  # the tracker reads its output flag on each step: set it around each one only
                item = next(gen, None)
            if item is None:
                return
            frame_idx, obj_ids, _low_res, video_res, _scores = item
            yield int(frame_idx), list(obj_ids), video_res

    def close(self) -> None:
        self.features.clear()


# --------------------------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------------------------

@dataclass
class _ObjPrompt:
    box: np.ndarray | None = None                 # (4,) xyxy pixels, clipped
    points: list[np.ndarray] = field(default_factory=list)  # (2,) x, y pixels
    labels: list[int] = field(default_factory=list)


class Sam3VideoPredictor:
    """Open a video once, prompt any frame with text, boxes, clicks or masks, then propagate through the video.

    Args:
        model: sam3's ``Sam3VideoInferenceWithInstanceInteractivity`` from ``build_sam3(..., mode='video')``.
        non_overlap_masks: in mask sessions (:meth:`add_mask`), give each pixel to at most one object (the one with
            the highest logit), as SAM2's ``non_overlap_masks``; e.g. True for DAVIS, False for SA-V. Text, box and
            point sessions resolve overlaps by sam3's own post-processing. Read on every call, so it may change.

    sam3 0.1.4 behaviour this class works around:

    - sam3 decides what ``propagate_in_video`` recomputes from an action history that misses cases (clicks added
      after a text prompt but before any propagation propagate only the clicked object; after a pass starting on
      the first or last frame it fetches cached results for frames never computed). This class tracks which
      frames are up to date for the text prompt and for each clicked object, and tells sam3 which propagation to
      run (full detector + tracker, tracker-only for the stale objects, or cached results) through
      :func:`sam3_cradio.compat.override_propagation_plan`.
    - Click/box prompts before any propagation fail in sam3 (no cached frame outputs); the cache is pre-filled
      with empty entries.
    - Frames are decoded and resized here (so any cv2-readable file, folder or list works, and sam3's cv2 loader,
      which does not scale pixels to [0, 1], is never used), then given to sam3 as a list of images; the original
      size is written back into the state, so sam3 returns masks at the video's resolution.
    - sam3's video model has no mask prompt; :meth:`add_mask` runs its tracker alone, as SAM2 does.
    """

    def __init__(self, model: torch.nn.Module, non_overlap_masks: bool = False) -> None:
        cfg = getattr(model, 'sam3_cradio_cfg', None)
        if cfg is None or cfg.get('mode') != 'video':
            raise ValueError('Sam3VideoPredictor needs a video model from build_sam3(..., mode="video")')
        self.model = model
        self.image_size = int(cfg['image_size'])
        if int(getattr(model, 'image_size', self.image_size)) != self.image_size:
            raise ValueError(f'model.image_size {model.image_size} differs from the config\'s {self.image_size}')
        self.non_overlap_masks = bool(non_overlap_masks)
        self._video: VideoLike | None = None
        self._state: dict[str, Any] | None = None
        self._masks: _MaskSession | None = None
        self.num_frames = 0
        self.height = 0
        self.width = 0
        self.fps: float | None = None
        self._clear_prompts()

    # ---- bookkeeping -------------------------------------------------------------------------------------------

    def _clear_prompts(self) -> None:
        self._text: str | None = None
        self._full_done: set[int] = set()  # frames computed by a full (detector + tracker) pass since the text
        self._obj_done: dict[int, set[int]] = {}  # clicked object -> frames up to date since its last prompt
        self._obj_prompts: dict[tuple[int, int], _ObjPrompt] = {}  # (frame, obj) -> its prompts there
        self._prompt_frames: set[int] = set()
        self._prompted = False  # any prompt since open/reset (objects may have been removed since)
        if getattr(self, '_masks', None) is not None:
            self._masks.close()
        self._masks = None

    def _require_open(self) -> None:
        if self._video is None:
            raise VideoNotOpenError('no video is open: call predictor.open(video) before prompting or propagating')

    @property
    def state(self) -> dict[str, Any] | None:
        """sam3's inference state for the open video (None when none is open), made on first use: the first text,
        box or point prompt, or reading this attribute."""
        if self._video is None:
            return None
        if self._state is None:
            self._state = self._init_sam3_state()
        return self._state

    def _init_sam3_state(self) -> dict[str, Any]:
        s = self.image_size
        frames: list[Image.Image] = []
        for i, rgb in enumerate(iter_video_frames(self._video)):
            if rgb.shape[:2] != (self.height, self.width):
                raise ValueError(f'frame {i} is {rgb.shape[1]}x{rgb.shape[0]} but the video was {self.width}x'
                                 f'{self.height} when opened; all frames of a video must have the same size')
            # as sam3's frame-folder loader: PIL bilinear (antialiased) straight to the square model input
            frames.append(Image.fromarray(rgb).resize((s, s), Image.BILINEAR))
        state = self.model.init_state(frames)
        del frames
        # the frames were resized before sam3 saw them: restore the original size, used for all outputs
        state['orig_height'], state['orig_width'] = self.height, self.width
        self._prefill_cache(state)
        return state

    def _check_frame(self, frame_idx: Any) -> int:
        self._require_open()
        if isinstance(frame_idx, (bool, np.bool_)) or not isinstance(frame_idx, (int, np.integer)):
            raise ValueError(f'frame_idx must be an int, got {frame_idx!r}')
        if not 0 <= int(frame_idx) < self.num_frames:
            raise ValueError(f'frame_idx {int(frame_idx)} is out of range: the video has {self.num_frames} frames '
                             f'(0..{self.num_frames - 1})')
        return int(frame_idx)

    @contextlib.contextmanager
    def _infer(self) -> Iterator[None]:
        """Inference mode, under bf16 autocast for a model built with dtype='bf16' (sam3 autocasts on CUDA itself)."""
        from .build import autocast_for

        with torch.inference_mode(), autocast_for(self.model):
            yield

    def _prefill_cache(self, state: dict[str, Any] | None = None) -> None:
        # sam3's _build_tracker_output asserts that the frame has cached outputs, which only a propagation
        # writes; clicks before any propagation (or after add_text, which clears the cache) would fail.
        state = self._state if state is None else state
        if state is None:
            return
        cache = state['cached_frame_outputs']
        for t in range(self.num_frames):
            cache.setdefault(t, {})

    def _refuse_masks_session(self, what: str) -> None:
        if self._masks is not None:
            raise ValueError(f'{what} cannot join a session of mask prompts (add_mask): masks run sam3\'s tracker '
                             f'alone; call reset() first')

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the original video."""
        return self.height, self.width

    @property
    def obj_ids(self) -> list[int]:
        """Ids of the objects currently tracked."""
        if self._masks is not None:
            return sorted(self._masks.obj_ids)
        if self._state is None:
            return []
        ids = self._state['tracker_metadata'].get('obj_ids_all_gpu')
        return [] if ids is None else sorted(int(i) for i in ids)

    @property
    def text(self) -> str | None:
        return self._text

    # ---- video -------------------------------------------------------------------------------------------------

    def open(self, video: VideoLike) -> VideoInfo:
        """Check a video and start a fresh session on it (prompts and objects of a previous video are dropped).

        Every frame is decoded once to check it; the frames are read again when a prompt needs them (see the
        module's note on memory).

        Args:
            video: a video file OpenCV can read (.mp4, .avi, .mov, .mkv, ...), a folder of frame images
                (.jpg/.png/...; natural order: 2.jpg before 10.jpg), an image file (1 frame), a list/tuple of
                images (paths, PIL images, arrays), or a (T, H, W[, C]) uint8 array. All frames must have the same
                size.

        Returns:
            The video's frame count, size and frame rate (None for folders and lists).

        Raises:
            FileNotFoundError: the path does not exist.
            ValueError: the file is not a readable video (broken, truncated, not a video), the folder has no frames,
                a frame cannot be read, or frames differ in size.
        """
        hw: tuple[int, int] | None = None
        n = 0
        for i, rgb in enumerate(iter_video_frames(video)):
            if hw is None:
                hw = rgb.shape[:2]
            elif rgb.shape[:2] != hw:
                raise ValueError(f'frame {i} is {rgb.shape[1]}x{rgb.shape[0]} but frame 0 is {hw[1]}x{hw[0]}; '
                                 f'all frames of a video must have the same size')
            n += 1
        if hw is None:  # an empty iterator that raised nothing (should not happen)
            raise ValueError(f'{video!r} has no frames')
        self.close()
        self._video = video
        self.num_frames = n
        self.height, self.width = int(hw[0]), int(hw[1])
        self.fps = video_fps(video)
        return VideoInfo(n, self.height, self.width, self.fps)

    def close(self) -> None:
        """Drop the video and its session (frees the frames and features)."""
        self._clear_prompts()
        self._video = None
        self._state = None
        self.num_frames = self.height = self.width = 0
        self.fps = None

    def reset(self) -> None:
        """Remove every prompt and object; the video stays open."""
        self._require_open()
        if self._state is not None:
            self.model.reset_state(self._state)
        self._clear_prompts()
        self._prefill_cache()

    # ---- prompts -----------------------------------------------------------------------------------------------

    def _result(self, frame_idx: int, out: dict[str, Any] | None, prompt_obj_id: int | None = None
                ) -> VideoFrameResult:
        if out is None:
            return VideoFrameResult.empty(frame_idx, self.height, self.width)
        masks = np.asarray(out['out_binary_masks'], dtype=bool).reshape(-1, self.height, self.width)
        ids = np.asarray(out['out_obj_ids'], dtype=np.int64).reshape(-1)
        scores = np.asarray(out['out_probs'], dtype=np.float32).reshape(-1)
        return self._frame_result(frame_idx, ids, masks, scores, prompt_obj_id)

    def _frame_result(self, frame_idx: int, ids: np.ndarray, masks: np.ndarray, scores: np.ndarray,
                      prompt_obj_id: int | None = None) -> VideoFrameResult:
        # sam3 drops empty masks before it makes the masks non-overlapping, which can empty a mask again
        keep = masks.any(axis=(1, 2))
        if not keep.all():
            ids, masks, scores = ids[keep], masks[keep], scores[keep]
        return VideoFrameResult(int(frame_idx), ids, masks, masks_to_boxes(masks), scores, prompt_obj_id)

    def _mask_result(self, frame_idx: int, obj_ids: list[int], video_res: torch.Tensor,
                     prompt_obj_id: int | None = None) -> VideoFrameResult:
        masks = (video_res[:, 0] > 0).cpu().numpy().reshape(-1, self.height, self.width)  # logits > 0, as SAM2
        ids = np.asarray(obj_ids, dtype=np.int64).reshape(-1)
        return self._frame_result(frame_idx, ids, masks, np.ones(len(ids), np.float32), prompt_obj_id)

    def add_text(self, frame_idx: int, text: str) -> VideoFrameResult:
        """Detect and track every instance of a noun phrase; returns the detections on ``frame_idx``.

        The text applies to the whole video (SAM3); ``frame_idx`` is where detection runs first. It starts over:
        objects and prompts added before (masks included) are dropped (a warning is logged when there were any).
        The whole text is one phrase (commas included); past SAM3's 30 text tokens it is cut, with a
        :class:`~sam3_cradio.predictor.TextTruncatedWarning` naming the ignored end.
        """
        return self._add_text(frame_idx, text, stacklevel=3)

    def _add_text(self, frame_idx: int, text: str, stacklevel: int) -> VideoFrameResult:
        """:meth:`add_text`; ``stacklevel`` of the truncation warning, from this method (3: the caller's caller)."""
        frame_idx = self._check_frame(frame_idx)
        text = check_text(text)
        if text == 'visual':  # sam3 reads this string as "no text" (sam3_video_inference.py, add_prompt)
            raise ValueError("the text prompt 'visual' is reserved by sam3; use another phrase, e.g. 'visual object'")
        warn_if_truncated(text, self.model, stacklevel=stacklevel)
        if self._obj_prompts or self.obj_ids:
            _logger.warning('add_text(%r) starts over: the %d object(s) and prompts added before are dropped; add '
                            'box and point prompts after the text prompt', text, len(self.obj_ids))
        with self._infer():
            _, out = self.model.add_prompt(self.state, frame_idx=frame_idx, text_str=text)
        self._clear_prompts()  # a mask session, if any, ends here
        self._text = text
        self._prompted = True
        self._full_done = {frame_idx}
        self._prompt_frames = {frame_idx}
        self._prefill_cache()
        return self._result(frame_idx, out)

    def _new_obj_id(self) -> int:
        used = list(self.obj_ids)
        if self._state is not None and self._state['tracker_metadata']:
            used.append(int(self._state['tracker_metadata'].get('max_obj_id', -1)))
        used += [o for (_, o) in self._obj_prompts]
        return max(used, default=-1) + 1

    def _check_obj_id(self, obj_id: Any) -> int:
        if obj_id is None:
            return self._new_obj_id()
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)) or obj_id < 0:
            raise ValueError(f'obj_id must be a non-negative int (or None for a new object), got {obj_id!r}')
        return int(obj_id)

    def add_box(self, frame_idx: int, box: Sequence[float], obj_id: int | None = None,
                clear: bool = False) -> VideoFrameResult:
        """Segment and track one object from a box on ``frame_idx`` (SAM2-style instance prompt).

        Args:
            box: ``[x0, y0, x1, y1]`` in pixels of the original frame. A box partly outside the frame is clipped to
                it; zero area, or no part inside the frame, raises ValueError.
            obj_id: the object to create or refine; None creates a new one (its id is ``result.prompt_obj_id``).
            clear: drop this object's earlier points on this frame (a new box always replaces an earlier box).

        Returns:
            The objects on ``frame_idx``.
        """
        frame_idx = self._check_frame(frame_idx)
        b = check_box(box, self.height, self.width)
        obj_id = self._check_obj_id(obj_id)
        self._refuse_masks_session('a box prompt')
        prompt = _ObjPrompt() if clear else self._obj_prompts.get((frame_idx, obj_id), _ObjPrompt())
        prompt.box = b
        return self._send_instance_prompt(frame_idx, obj_id, prompt)

    def add_points(self, frame_idx: int, points: Sequence[Sequence[float]], labels: Sequence[int] | None = None,
                   obj_id: int | None = None, clear: bool = False) -> VideoFrameResult:
        """Segment and track one object from clicks on ``frame_idx`` (SAM2-style instance prompt).

        Args:
            points: (x, y) pixels of the original frame; each must lie inside the frame.
            labels: 1 (positive) or 0 (negative) per point; default all positive.
            obj_id: the object to create or refine; None creates a new one (its id is ``result.prompt_obj_id``).
            clear: drop this object's earlier prompts (points and box) on this frame instead of adding to them.

        Returns:
            The objects on ``frame_idx``.
        """
        frame_idx = self._check_frame(frame_idx)
        if labels is None:
            try:
                labels = [1] * len(points)
            except TypeError:
                raise ValueError(f'points are a non-empty list of (x, y) pixel pairs, got {points!r}') from None
        p, lab = check_points(points, labels, self.height, self.width)
        obj_id = self._check_obj_id(obj_id)
        self._refuse_masks_session('a point prompt')
        prompt = _ObjPrompt() if clear else self._obj_prompts.get((frame_idx, obj_id), _ObjPrompt())
        prompt = _ObjPrompt(prompt.box, prompt.points + list(p), prompt.labels + [int(x) for x in lab])
        return self._send_instance_prompt(frame_idx, obj_id, prompt)

    def _send_instance_prompt(self, frame_idx: int, obj_id: int, prompt: _ObjPrompt) -> VideoFrameResult:
        coords, labels = [], []
        if prompt.box is not None:  # SAM2 encodes a box as its two corners, labels 2 and 3, before any clicks
            coords += [prompt.box[:2], prompt.box[2:]]
            labels += [2, 3]
        coords += prompt.points
        labels += prompt.labels
        rel = np.asarray(coords, dtype=np.float32) / np.array([self.width, self.height], np.float32)
        limit = int(getattr(self.model, 'max_num_objects', 0) or 0)
        if limit > 0 and obj_id not in self.obj_ids and len(self.obj_ids) >= limit:
            raise ValueError(f'cannot add object {obj_id}: {len(self.obj_ids)} objects are tracked, the model\'s '
                             f'limit (model.max_num_objects = {limit}); remove_object() one or raise the limit')
        state = self.state
        self._prefill_cache()
        with self._infer():
            ret = self.model.add_prompt(state, frame_idx=frame_idx, points=torch.from_numpy(rel),
                                        point_labels=torch.tensor(labels, dtype=torch.int32), obj_id=obj_id,
                                        rel_coordinates=True)
        if len(ret) != 2:  # sam3 returns (frame, [], masks, masks) when it refuses a new object (object limit)
            raise ValueError(f'sam3 did not add object {obj_id} (object limit model.max_num_objects = {limit})')
        out = ret[1]
        self._obj_prompts[(frame_idx, obj_id)] = prompt
        self._obj_done[obj_id] = {frame_idx}
        self._prompt_frames.add(frame_idx)
        self._prompted = True
        return self._result(frame_idx, out, prompt_obj_id=obj_id)

    def _check_mask(self, mask: Any, frame_idx: int, obj_id: int, allow_empty: bool) -> np.ndarray:
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ValueError(f'a mask is a 2-D (H, W) array at the video\'s resolution, got shape {m.shape}')
        if m.shape != (self.height, self.width):
            raise ValueError(f'the mask is {m.shape[1]}x{m.shape[0]} but the video is {self.width}x{self.height} '
                             f'(W x H); give a boolean mask of shape ({self.height}, {self.width})')
        if m.dtype != np.bool_:
            if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)) \
                    or not np.isin(m, (0, 1)).all():
                raise ValueError(f'a mask is boolean (or holds only 0 and 1), got dtype {m.dtype} with values '
                                 f'{np.unique(m)[:5].tolist()}')
            m = m.astype(bool)
        if not allow_empty and not m.any():
            raise ValueError(f'the mask of object {obj_id} on frame {frame_idx} is empty: give at least one '
                             f'foreground pixel (allow_empty=True tracks an object from nothing, as SAM2\'s VOS '
                             f'evaluation does for objects absent from the prompted frame)')
        return np.ascontiguousarray(m)

    def add_mask(self, frame_idx: int, obj_id: int | None, mask: Any, allow_empty: bool = False
                 ) -> VideoFrameResult:
        """Segment and track one object from its mask on ``frame_idx`` (SAM2's ``add_new_mask``).

        Mask prompts run sam3's tracker alone (sam3's video model takes none), in one tracker state for all the
        session's objects, the way SAM2's video predictor does; they cannot join a session with text, box or point
        prompts (``reset()`` first). Add every object's mask before the first :meth:`propagate` (the tracker
        refuses new objects once it has propagated); a new mask for an existing object refines it.

        Args:
            frame_idx: the frame the mask belongs to.
            obj_id: the object to create or refine; None creates a new one (its id is ``result.prompt_obj_id``).
            mask: (H, W) boolean (or 0/1) array or tensor at the video's resolution; True marks the object.
            allow_empty: accept a mask with no foreground pixel (the object is tracked from nothing, as SAM2's VOS
                evaluation does); by default an empty mask is an error.

        Returns:
            The objects on ``frame_idx`` (scores 1.0).

        Raises:
            ValueError: the frame is out of range, the mask has another size, is not boolean, or is empty; the
                session holds text, box or point prompts; or the object is new after a propagation.
        """
        frame_idx = self._check_frame(frame_idx)
        obj_id = self._check_obj_id(obj_id)
        m = self._check_mask(mask, frame_idx, obj_id, allow_empty)
        if self._masks is None and (self._text is not None or self._obj_prompts or self.obj_ids):
            raise ValueError('add_mask cannot join a session with text, box or point prompts: sam3\'s video model '
                             'takes no masks, so mask prompts run its tracker alone; call reset() first')
        if self._masks is None:
            self._masks = _MaskSession(self.model, frame_reader(self._video), self.num_frames, self.height,
                                       self.width, lambda: self.non_overlap_masks)
        elif self._masks.started and obj_id not in self._masks.obj_ids:
            raise ValueError(f'object {obj_id} is new, but the tracker has already propagated and takes new objects '
                             f'only before that (tracked: {self._masks.obj_ids}); add every object\'s mask before '
                             f'propagate(), or reset()')
        obj_ids, video_res = self._masks.add(frame_idx, obj_id, m)
        self._prompt_frames.add(frame_idx)
        self._prompted = True
        return self._mask_result(frame_idx, obj_ids, video_res, prompt_obj_id=obj_id)

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking an object and drop it from every frame's results."""
        self._require_open()
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise ValueError(f'obj_id must be an int, got {obj_id!r}')
        if int(obj_id) not in self.obj_ids:
            raise ValueError(f'object {obj_id} is not tracked; tracked objects: {self.obj_ids}')
        if self._masks is not None:
            self._masks.remove(int(obj_id))
            if not self._masks.obj_ids:  # nothing left to track: the session is empty again
                self._masks.close()
                self._masks = None
            return
        with torch.inference_mode():
            self.model.remove_object(self.state, int(obj_id), is_user_action=True)
        self._obj_done.pop(int(obj_id), None)
        for key in [k for k in self._obj_prompts if k[1] == int(obj_id)]:
            del self._obj_prompts[key]

    # ---- propagation -------------------------------------------------------------------------------------------

    def _plan(self, frames: set[int]) -> tuple[str, list[int] | None]:
        """Which sam3 propagation brings ``frames`` up to date: full, partial (stale objects), or fetch."""
        if self._text is not None and not frames <= self._full_done:
            return 'propagation_full', None
        live = set(self.obj_ids)
        stale = sorted(o for o, done in self._obj_done.items() if o in live and not frames <= done)
        if stale:
            return 'propagation_partial', stale
        return 'propagation_fetch', None

    def _run_pass(self, start: int, max_track: int | None, reverse: bool) -> Iterator[VideoFrameResult]:
        """One sam3 ``propagate_in_video`` pass, with the propagation type chosen by :meth:`_plan`."""
        n = self.num_frames
        if reverse:
            end = max(start - (n if max_track is None else max_track), 0)
            frames = set(range(start - 1, end - 1, -1))
        else:
            end = min(start + (n if max_track is None else max_track), n - 1)
            frames = set(range(start, end + 1))
        if not frames:
            return
        plan = self._plan(frames)
        _logger.debug('propagate from %d (reverse=%s): %s', start, reverse, plan)
        model, state = self.model, self.state
        gen = model.propagate_in_video(state, start_frame_idx=start, max_frame_num_to_track=max_track,
                                       reverse=reverse)
        # sam3 decides the propagation type on the first step: answer with the plan for this call only
        with compat.override_propagation_plan(model, plan), self._infer():
            first = next(gen, None)
        if first is None:
            return
        kind, objs = plan
        item: tuple[int, Any] | None = first
        while item is not None:
            frame_idx, out = item
            frame_idx = int(frame_idx)
            if kind == 'propagation_full':
                self._full_done.add(frame_idx)
                for done in self._obj_done.values():
                    done.add(frame_idx)
            elif kind == 'propagation_partial':
                for o in objs:
                    if o in self._obj_done:
                        self._obj_done[o].add(frame_idx)
            yield self._result(frame_idx, out)
            with self._infer():
                item = next(gen, None)

    def _run_mask_pass(self, start: int, max_track: int | None, reverse: bool) -> Iterator[VideoFrameResult]:
        for frame_idx, obj_ids, video_res in self._masks.propagate(start, max_track, reverse):
            yield self._mask_result(frame_idx, obj_ids, video_res)

    def propagate(self, direction: str = 'forward', start_frame: int | None = None,
                  max_frames: int | None = None) -> Iterator[VideoFrameResult]:
        """Track the prompted objects through the video; yields one :class:`VideoFrameResult` per frame.

        Args:
            direction: 'forward' (start_frame, start_frame + 1, ...), 'backward' (start_frame, start_frame - 1, ...)
                or 'both' (forward, then backward from start_frame - 1).
            start_frame: default: the first prompted frame ('forward', 'both') or the last one ('backward').
            max_frames: at most this many frames per direction, the start frame included (None: to the end).

        Frames already up to date (no prompt changed since they were computed) come from sam3's cache; after new
        prompts only what they affect is recomputed (everything after ``add_text``, the changed objects after
        ``add_box`` / ``add_points``). Mask sessions run SAM2's tracker propagation each time.
        """
        self._require_open()
        if direction not in DIRECTIONS:
            raise ValueError(f'direction must be one of {DIRECTIONS}, got {direction!r}')
        if not self._prompted:
            raise ValueError('nothing to track: add a prompt first (add_text, add_box, add_points or add_mask)')
        if start_frame is None:
            frames = self._prompt_frames or {0}
            start_frame = max(frames) if direction == 'backward' else min(frames)
        start = self._check_frame(start_frame)
        if max_frames is not None:
            if isinstance(max_frames, (bool, np.bool_)) or not isinstance(max_frames, (int, np.integer)) \
                    or max_frames < 1:
                raise ValueError(f'max_frames must be a positive int or None, got {max_frames!r}')
        k = None if max_frames is None else int(max_frames) - 1  # sam3 counts frames beyond the start frame
        if self._masks is not None:
            return self._propagate_masks(direction, start, k)
        return self._propagate(direction, start, k)

    def _propagate(self, direction: str, start: int, k: int | None) -> Iterator[VideoFrameResult]:
        if direction in ('forward', 'both'):
            yield from self._run_pass(start, k, reverse=False)
            if direction == 'both':
                yield from self._run_pass(start, k, reverse=True)
        else:
            # sam3's reverse pass starts at start - 1 (it expects a forward pass to have covered the start frame)
            yield from self._run_pass(start, 0, reverse=False)
            yield from self._run_pass(start, k, reverse=True)

    def _propagate_masks(self, direction: str, start: int, k: int | None) -> Iterator[VideoFrameResult]:
        # the tracker's passes include their start frame: 'both' goes back from start - 1, k - 1 frames further
        if direction == 'backward':
            yield from self._run_mask_pass(start, k, reverse=True)
            return
        yield from self._run_mask_pass(start, k, reverse=False)
        if direction == 'both' and start > 0 and (k is None or k > 0):
            yield from self._run_mask_pass(start - 1, None if k is None else k - 1, reverse=True)
