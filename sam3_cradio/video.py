"""Video API: SAM2/SAM3 video-predictor ergonomics on sam3's own video model, results in the video's own pixels.

    model = build_sam3('cradio_v4_h', mode='video')
    predictor = Sam3VideoPredictor(model)
    predictor.open('clip.mp4')                        # a video file, a folder of frames, or a list of images
    predictor.add_text(0, 'person')                   # open-vocabulary: every person, tracked (SAM3)
    predictor.add_box(12, [40, 30, 200, 310])         # one object from a box on frame 12 (SAM2-style)
    predictor.add_points(12, [[120, 80]], [1], obj_id=7)
    for r in predictor.propagate('both'):             # VideoFrameResult per frame
        print(r.frame_idx, r.obj_ids, r.masks.shape, r.boxes)

The model is sam3's ``Sam3VideoInferenceWithInstanceInteractivity`` as built by ``build_sam3(..., mode='video')``
(detector + SAM2-style tracker, unchanged); this module only converts inputs and outputs and steers sam3's
propagation. Rules (checked before any model call):

- Coordinates are pixels of the original video frame: boxes ``[x0, y0, x1, y1]``, points ``(x, y)``.
- A box partly outside the frame is clipped to it; a box with zero area, or none inside the frame, is an error.
  Points must lie inside the frame (0 <= x <= W, 0 <= y <= H).
- Text prompts are global (SAM3 semantics): ``add_text`` starts over, dropping every object and prompt added
  before it. Add box and point prompts after the text prompt.
- ``add_box`` / ``add_points`` create (``obj_id=None``: a new id) or refine one object in the tracker, like SAM2's
  ``add_new_points_or_box``. On the same frame and object, points accumulate and a new box replaces the old one
  (``clear=True`` starts that frame's prompts for the object afresh).
- Results: masks (N, H, W) bool at the original resolution, boxes (N, 4) float32 xyxy pixels
  (``[min x, min y, max x + 1, max y + 1]`` of the mask, so inside ``[0, W] x [0, H]``), scores (N,) float32
  (the detection score; 1.0 for objects from clicks/boxes), obj_ids (N,) int64. Objects whose mask is empty on a
  frame are left out of that frame, as sam3 does.

Memory: like sam3, every frame is kept resized to the model's square input (``image_size``) in RAM (float16);
the original-resolution frames are not kept.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .images import to_rgb_array
from .predictor import check_box, check_points, check_text, masks_to_boxes

__all__ = [
    'Sam3VideoPredictor', 'VideoFrameResult', 'TrackSummary', 'VideoInfo', 'VideoNotOpenError', 'VideoLike',
    'IMAGE_EXTS', 'list_frame_files', 'iter_video_frames', 'probe_video', 'masks_to_boxes', 'track_video',
]

_logger = logging.getLogger(__name__)

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
DIRECTIONS = ('forward', 'backward', 'both')

VideoLike = Union[str, os.PathLike, Sequence[Any], np.ndarray]


class VideoNotOpenError(RuntimeError, ValueError):
    """A prompt or propagation was requested before :meth:`Sam3VideoPredictor.open` (a RuntimeError and a
    ValueError, so either ``except`` style catches it)."""


# --------------------------------------------------------------------------------------------------------------
# Reading videos
# --------------------------------------------------------------------------------------------------------------

def _natural_key(name: str) -> List[Any]:
    # '2.jpg' < '10.jpg'; digit runs compare as numbers
    return [(0, int(t), '') if t.isdigit() else (1, 0, t.lower()) for t in re.split(r'(\d+)', name) if t]


def list_frame_files(folder: Union[str, os.PathLike]) -> List[Path]:
    """Image files of a frame folder (``IMAGE_EXTS``), in natural order (``2.jpg`` before ``10.jpg``).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'frame folder {str(folder)!r} does not exist')
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise ValueError(
            f'frame folder {str(folder)!r} has no frames: put the video\'s frames there as image files '
            f'({", ".join(IMAGE_EXTS)}) named in order, e.g. 00000.jpg, 00001.jpg, ...')
    return files


def _open_capture(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ValueError(
            f'{path} cannot be read as a video (OpenCV/FFmpeg failed to open it: the file is broken, truncated, '
            f'or not a video). Re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4) or pass a folder of frames')
    return cap


def _broken_video(path: Path) -> ValueError:
    return ValueError(
        f'no frame could be decoded from {path}: the file is broken, truncated, or not a video. Re-encode it '
        f'(e.g. ffmpeg -i in -c:v libx264 out.mp4) or pass a folder of frames')


def _iter_video_file(path: Path) -> Iterator[np.ndarray]:
    import cv2

    cap = _open_capture(path)
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            n += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    if n == 0:
        raise _broken_video(path)
    if expected > n:
        _logger.warning('decoded %d of the %d frames %s declares; the file may be truncated', n, expected, path)


def _is_frame_list(video: Any) -> bool:
    return isinstance(video, (list, tuple)) or (isinstance(video, np.ndarray) and video.ndim == 4)


def iter_video_frames(video: VideoLike) -> Iterator[np.ndarray]:
    """Yield the frames of ``video`` as (H, W, 3) uint8 RGB arrays at their original resolution.

    ``video``: a video file OpenCV can read (.mp4, .avi, .mov, ...), a folder of frame images, one image file
    (a 1-frame video), a list/tuple of images (paths, PIL images or arrays), or a (T, H, W[, C]) array.
    """
    if _is_frame_list(video):
        if len(video) == 0:
            raise ValueError('the list of frames is empty; give at least one image')
        for frame in video:
            yield to_rgb_array(frame)
        return
    if not isinstance(video, (str, os.PathLike)):
        raise TypeError(f'expected a video path, a frame folder or a list of images, got {type(video).__name__}')
    path = Path(video)
    if not path.exists():
        raise FileNotFoundError(f'video {str(path)!r} does not exist')
    if path.is_dir():
        for f in list_frame_files(path):
            yield to_rgb_array(f)
    elif path.suffix.lower() in IMAGE_EXTS:
        yield to_rgb_array(path)
    else:
        yield from _iter_video_file(path)


@dataclass
class VideoInfo:
    """What :func:`probe_video` finds without decoding every frame."""
    num_frames: int  # for video files: the container's count (may be approximate); exact for folders and lists
    height: int
    width: int
    fps: Optional[float]


def _is_video_file(video: Any) -> bool:
    return isinstance(video, (str, os.PathLike)) and Path(video).is_file() \
        and Path(video).suffix.lower() not in IMAGE_EXTS


def probe_video(video: VideoLike) -> VideoInfo:
    """Check that ``video`` can be read (its first frame decodes) and report its size, frame count and fps.

    Raises FileNotFoundError / ValueError with what to do, like :meth:`Sam3VideoPredictor.open`.
    """
    import cv2

    if not _is_video_file(video):  # a folder, an image, a list (or a missing path): decode the first frame
        first = next(iter_video_frames(video))
        if _is_frame_list(video):
            n = len(video)
        else:
            n = len(list_frame_files(video)) if Path(video).is_dir() else 1
        return VideoInfo(n, first.shape[0], first.shape[1], None)
    path = Path(video)
    cap = _open_capture(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise _broken_video(path)
        fps = cap.get(cv2.CAP_PROP_FPS)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return VideoInfo(max(n, 1), frame.shape[0], frame.shape[1], fps if fps and fps > 0 else None)


def _video_fps(video: VideoLike) -> Optional[float]:
    return probe_video(video).fps if _is_video_file(video) else None


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------

@dataclass
class VideoFrameResult:
    """The objects on one frame, in the original video's pixels.

    Attributes:
        frame_idx: the frame.
        obj_ids: (N,) int64 object ids, stable across frames.
        masks: (N, H, W) bool at the original video resolution.
        boxes: (N, 4) float32 xyxy pixels of each mask (``[x0, y0, x1 + 1, y1 + 1]``), inside the frame.
        scores: (N,) float32: the object's detection score (1.0 for objects from clicks or boxes).
        prompt_obj_id: for the result of ``add_box`` / ``add_points``: the id of the object the prompt created or
            refined (it may be missing from ``obj_ids`` when its mask is empty); otherwise None.
    """
    frame_idx: int
    obj_ids: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    prompt_obj_id: Optional[int] = None

    def __len__(self) -> int:
        return len(self.obj_ids)

    @classmethod
    def empty(cls, frame_idx: int, height: int, width: int) -> 'VideoFrameResult':
        return cls(frame_idx, np.zeros((0,), np.int64), np.zeros((0, height, width), bool),
                   np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


# --------------------------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------------------------

@dataclass
class _ObjPrompt:
    box: Optional[np.ndarray] = None                 # (4,) xyxy pixels, clipped
    points: List[np.ndarray] = field(default_factory=list)  # (2,) x, y pixels
    labels: List[int] = field(default_factory=list)


class Sam3VideoPredictor:
    """Open a video once, prompt any frame with text, boxes or clicks, then propagate through the video.

    Args:
        model: sam3's ``Sam3VideoInferenceWithInstanceInteractivity`` from ``build_sam3(..., mode='video')``.

    sam3 0.1.4 behaviour this class works around:

    - sam3 decides what ``propagate_in_video`` recomputes from an action history that misses cases (clicks added
      after a text prompt but before any propagation propagate only the clicked object; after a pass starting on
      the first or last frame it fetches cached results for frames never computed). This class tracks which
      frames are up to date for the text prompt and for each clicked object, and tells sam3 which propagation to
      run (full detector + tracker, tracker-only for the stale objects, or cached results).
    - Click/box prompts before any propagation fail in sam3 (no cached frame outputs); the cache is pre-filled
      with empty entries.
    - Frames are decoded and resized here (so any cv2-readable file, folder or list works, and sam3's cv2 loader,
      which does not scale pixels to [0, 1], is never used), then given to sam3 as a list of images; the original
      size is written back into the state, so sam3 returns masks at the video's resolution.
    - On CPU, a bfloat16 tracker memory reaching float32 layers is cast (``compat.shim_tracker_memory_float32``).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        cfg = getattr(model, 'sam3_cradio_cfg', None)
        if cfg is None or cfg.get('mode') != 'video':
            raise ValueError('Sam3VideoPredictor needs a video model from build_sam3(..., mode="video")')
        self.model = model
        self.image_size = int(cfg['image_size'])
        if int(getattr(model, 'image_size', self.image_size)) != self.image_size:
            raise ValueError(f'model.image_size {model.image_size} differs from the config\'s {self.image_size}')
        self.state: Optional[Dict[str, Any]] = None
        self.num_frames = 0
        self.height = 0
        self.width = 0
        self.fps: Optional[float] = None
        self._clear_prompts()

    # ---- bookkeeping -------------------------------------------------------------------------------------------

    def _clear_prompts(self) -> None:
        self._text: Optional[str] = None
        self._full_done: Set[int] = set()  # frames computed by a full (detector + tracker) pass since the text
        self._obj_done: Dict[int, Set[int]] = {}  # clicked object -> frames up to date since its last prompt
        self._obj_prompts: Dict[Tuple[int, int], _ObjPrompt] = {}  # (frame, obj) -> its prompts there
        self._prompt_frames: Set[int] = set()
        self._prompted = False  # any prompt since open/reset (objects may have been removed since)

    def _require_open(self) -> Dict[str, Any]:
        if self.state is None:
            raise VideoNotOpenError('no video is open: call predictor.open(video) before prompting or propagating')
        return self.state

    def _check_frame(self, frame_idx: Any) -> int:
        self._require_open()
        if isinstance(frame_idx, (bool, np.bool_)) or not isinstance(frame_idx, (int, np.integer)):
            raise ValueError(f'frame_idx must be an int, got {frame_idx!r}')
        if not 0 <= int(frame_idx) < self.num_frames:
            raise ValueError(f'frame_idx {int(frame_idx)} is out of range: the video has {self.num_frames} frames '
                             f'(0..{self.num_frames - 1})')
        return int(frame_idx)

    def _prefill_cache(self) -> None:
        # sam3's _build_tracker_output asserts that the frame has cached outputs, which only a propagation
        # writes; clicks before any propagation (or after add_text, which clears the cache) would fail.
        cache = self.state['cached_frame_outputs']
        for t in range(self.num_frames):
            cache.setdefault(t, {})

    @property
    def frame_size(self) -> Tuple[int, int]:
        """(H, W) of the original video."""
        return self.height, self.width

    @property
    def obj_ids(self) -> List[int]:
        """Ids of the objects currently tracked."""
        if self.state is None:
            return []
        ids = self.state['tracker_metadata'].get('obj_ids_all_gpu')
        return [] if ids is None else sorted(int(i) for i in ids)

    @property
    def text(self) -> Optional[str]:
        return self._text

    # ---- video -------------------------------------------------------------------------------------------------

    def open(self, video: VideoLike) -> Dict[str, Any]:
        """Load a video and start a fresh session (prompts and objects of a previous video are dropped).

        Args:
            video: a video file OpenCV can read (.mp4, .avi, .mov, .mkv, ...), a folder of frame images
                (.jpg/.png/...; natural order: 2.jpg before 10.jpg), an image file (1 frame), a list/tuple of
                images (paths, PIL images, arrays), or a (T, H, W[, C]) uint8 array. All frames must have the same
                size.

        Returns:
            sam3's inference state (also kept as ``self.state``).

        Raises:
            FileNotFoundError: the path does not exist.
            ValueError: the file is not a readable video (broken, truncated, not a video), the folder has no frames,
                a frame cannot be read, or frames differ in size.
        """
        s = self.image_size
        frames: List[Image.Image] = []
        hw: Optional[Tuple[int, int]] = None
        for i, rgb in enumerate(iter_video_frames(video)):
            if hw is None:
                hw = rgb.shape[:2]
            elif rgb.shape[:2] != hw:
                raise ValueError(f'frame {i} is {rgb.shape[1]}x{rgb.shape[0]} but frame 0 is {hw[1]}x{hw[0]}; '
                                 f'all frames of a video must have the same size')
            # as sam3's frame-folder loader: PIL bilinear (antialiased) straight to the square model input
            frames.append(Image.fromarray(rgb).resize((s, s), Image.BILINEAR))
        if hw is None:  # an empty iterator that raised nothing (should not happen)
            raise ValueError(f'{video!r} has no frames')
        self.close()
        state = self.model.init_state(frames)
        del frames
        # the frames were resized before sam3 saw them: restore the original size, used for all outputs
        state['orig_height'], state['orig_width'] = int(hw[0]), int(hw[1])
        self.state = state
        self.num_frames = int(state['num_frames'])
        self.height, self.width = int(hw[0]), int(hw[1])
        self.fps = _video_fps(video)
        self._clear_prompts()
        self._prefill_cache()
        return state

    def close(self) -> None:
        """Drop the video and its session (frees the frames and features)."""
        self.state = None
        self.num_frames = self.height = self.width = 0
        self.fps = None
        self._clear_prompts()

    def reset(self) -> None:
        """Remove every prompt and object; the video stays open."""
        state = self._require_open()
        self.model.reset_state(state)
        self._clear_prompts()
        self._prefill_cache()

    # ---- prompts -----------------------------------------------------------------------------------------------

    def _result(self, frame_idx: int, out: Optional[Dict[str, Any]], prompt_obj_id: Optional[int] = None
                ) -> VideoFrameResult:
        if out is None:
            return VideoFrameResult.empty(frame_idx, self.height, self.width)
        masks = np.asarray(out['out_binary_masks'], dtype=bool).reshape(-1, self.height, self.width)
        ids = np.asarray(out['out_obj_ids'], dtype=np.int64).reshape(-1)
        scores = np.asarray(out['out_probs'], dtype=np.float32).reshape(-1)
        # sam3 drops empty masks before it makes the masks non-overlapping, which can empty a mask again
        keep = masks.any(axis=(1, 2))
        if not keep.all():
            ids, masks, scores = ids[keep], masks[keep], scores[keep]
        return VideoFrameResult(int(frame_idx), ids, masks, masks_to_boxes(masks), scores, prompt_obj_id)

    def add_text(self, frame_idx: int, text: str) -> VideoFrameResult:
        """Detect and track every instance of a noun phrase; returns the detections on ``frame_idx``.

        The text applies to the whole video (SAM3); ``frame_idx`` is where detection runs first. It starts over:
        objects and prompts added before are dropped (a warning is logged when there were any).
        """
        state = self._require_open()
        frame_idx = self._check_frame(frame_idx)
        text = check_text(text)
        if text == 'visual':  # sam3 reads this string as "no text" (sam3_video_inference.py, add_prompt)
            raise ValueError("the text prompt 'visual' is reserved by sam3; use another phrase, e.g. 'visual object'")
        if self._obj_prompts or self.obj_ids:
            _logger.warning('add_text(%r) starts over: the %d object(s) and prompts added before are dropped; add '
                            'box and point prompts after the text prompt', text, len(self.obj_ids))
        with torch.inference_mode():
            _, out = self.model.add_prompt(state, frame_idx=frame_idx, text_str=text)
        self._clear_prompts()
        self._text = text
        self._prompted = True
        self._full_done = {frame_idx}
        self._prompt_frames = {frame_idx}
        self._prefill_cache()
        return self._result(frame_idx, out)

    def _new_obj_id(self) -> int:
        meta = self.state['tracker_metadata']
        used = [int(meta.get('max_obj_id', -1))] if meta else []
        used += [o for (_, o) in self._obj_prompts] + self.obj_ids
        return max(used, default=-1) + 1

    def _check_obj_id(self, obj_id: Any) -> int:
        if obj_id is None:
            return self._new_obj_id()
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)) or obj_id < 0:
            raise ValueError(f'obj_id must be a non-negative int (or None for a new object), got {obj_id!r}')
        return int(obj_id)

    def add_box(self, frame_idx: int, box: Sequence[float], obj_id: Optional[int] = None,
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
        self._require_open()
        frame_idx = self._check_frame(frame_idx)
        b = check_box(box, self.height, self.width)
        obj_id = self._check_obj_id(obj_id)
        prompt = _ObjPrompt() if clear else self._obj_prompts.get((frame_idx, obj_id), _ObjPrompt())
        prompt.box = b
        return self._send_instance_prompt(frame_idx, obj_id, prompt)

    def add_points(self, frame_idx: int, points: Sequence[Sequence[float]], labels: Optional[Sequence[int]] = None,
                   obj_id: Optional[int] = None, clear: bool = False) -> VideoFrameResult:
        """Segment and track one object from clicks on ``frame_idx`` (SAM2-style instance prompt).

        Args:
            points: (x, y) pixels of the original frame; each must lie inside the frame.
            labels: 1 (positive) or 0 (negative) per point; default all positive.
            obj_id: the object to create or refine; None creates a new one (its id is ``result.prompt_obj_id``).
            clear: drop this object's earlier prompts (points and box) on this frame instead of adding to them.

        Returns:
            The objects on ``frame_idx``.
        """
        self._require_open()
        frame_idx = self._check_frame(frame_idx)
        if labels is None:
            try:
                labels = [1] * len(points)
            except TypeError:
                raise ValueError(f'points are a non-empty list of (x, y) pixel pairs, got {points!r}') from None
        p, lab = check_points(points, labels, self.height, self.width)
        obj_id = self._check_obj_id(obj_id)
        prompt = _ObjPrompt() if clear else self._obj_prompts.get((frame_idx, obj_id), _ObjPrompt())
        prompt = _ObjPrompt(prompt.box, prompt.points + list(p), prompt.labels + [int(x) for x in lab])
        return self._send_instance_prompt(frame_idx, obj_id, prompt)

    def _send_instance_prompt(self, frame_idx: int, obj_id: int, prompt: _ObjPrompt) -> VideoFrameResult:
        state = self.state
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
        self._prefill_cache()
        with torch.inference_mode():
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

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking an object and drop it from every frame's results."""
        state = self._require_open()
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise ValueError(f'obj_id must be an int, got {obj_id!r}')
        if int(obj_id) not in self.obj_ids:
            raise ValueError(f'object {obj_id} is not tracked; tracked objects: {self.obj_ids}')
        with torch.inference_mode():
            self.model.remove_object(state, int(obj_id), is_user_action=True)
        self._obj_done.pop(int(obj_id), None)
        for key in [k for k in self._obj_prompts if k[1] == int(obj_id)]:
            del self._obj_prompts[key]

    # ---- propagation -------------------------------------------------------------------------------------------

    def _plan(self, frames: Set[int]) -> Tuple[str, Optional[List[int]]]:
        """Which sam3 propagation brings ``frames`` up to date: full, partial (stale objects), or fetch."""
        if self._text is not None and not frames <= self._full_done:
            return 'propagation_full', None
        live = set(self.obj_ids)
        stale = sorted(o for o, done in self._obj_done.items() if o in live and not frames <= done)
        if stale:
            return 'propagation_partial', stale
        return 'propagation_fetch', None

    def _run_pass(self, start: int, max_track: Optional[int], reverse: bool) -> Iterator[VideoFrameResult]:
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
        # sam3 decides the propagation type on the first step (parse_action_history_for_propagation); answer with
        # the plan for this call only, then restore the class method.
        model.__dict__['parse_action_history_for_propagation'] = lambda _state: plan
        try:
            with torch.inference_mode():
                first = next(gen, None)
        finally:
            model.__dict__.pop('parse_action_history_for_propagation', None)
        if first is None:
            return
        kind, objs = plan
        item: Optional[Tuple[int, Any]] = first
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
            with torch.inference_mode():
                item = next(gen, None)

    def propagate(self, direction: str = 'forward', start_frame: Optional[int] = None,
                  max_frames: Optional[int] = None) -> Iterator[VideoFrameResult]:
        """Track the prompted objects through the video; yields one :class:`VideoFrameResult` per frame.

        Args:
            direction: 'forward' (start_frame, start_frame + 1, ...), 'backward' (start_frame, start_frame - 1, ...)
                or 'both' (forward, then backward from start_frame - 1).
            start_frame: default: the first prompted frame ('forward', 'both') or the last one ('backward').
            max_frames: at most this many frames per direction, the start frame included (None: to the end).

        Frames already up to date (no prompt changed since they were computed) come from sam3's cache; after new
        prompts only what they affect is recomputed (everything after ``add_text``, the changed objects after
        ``add_box`` / ``add_points``).
        """
        self._require_open()
        if direction not in DIRECTIONS:
            raise ValueError(f'direction must be one of {DIRECTIONS}, got {direction!r}')
        if not self._prompted:
            raise ValueError('nothing to track: add a prompt first (add_text, add_box or add_points)')
        if start_frame is None:
            frames = self._prompt_frames or {0}
            start_frame = max(frames) if direction == 'backward' else min(frames)
        start = self._check_frame(start_frame)
        if max_frames is not None:
            if isinstance(max_frames, (bool, np.bool_)) or not isinstance(max_frames, (int, np.integer)) \
                    or max_frames < 1:
                raise ValueError(f'max_frames must be a positive int or None, got {max_frames!r}')
        k = None if max_frames is None else int(max_frames) - 1  # sam3 counts frames beyond the start frame
        return self._propagate(direction, start, k)

    def _propagate(self, direction: str, start: int, k: Optional[int]) -> Iterator[VideoFrameResult]:
        if direction in ('forward', 'both'):
            yield from self._run_pass(start, k, reverse=False)
            if direction == 'both':
                yield from self._run_pass(start, k, reverse=True)
        else:
            # sam3's reverse pass starts at start - 1 (it expects a forward pass to have covered the start frame)
            yield from self._run_pass(start, 0, reverse=False)
            yield from self._run_pass(start, k, reverse=True)


# --------------------------------------------------------------------------------------------------------------
# Tracking a whole video to an annotated .mp4 (the `track` command)
# --------------------------------------------------------------------------------------------------------------

@dataclass
class TrackSummary:
    """What :func:`track_video` wrote."""
    out: str
    frames: int
    object_ids: List[int]
    fps: float
    height: int
    width: int
    seconds: float = 0.0


def track_video(
        model: Union[torch.nn.Module, Sam3VideoPredictor],
        video: VideoLike,
        text: Optional[str] = None,
        box: Optional[Sequence[float]] = None,
        out: Union[str, os.PathLike] = 'tracked.mp4',
        progress: bool = True,
        fps: Optional[float] = None,
) -> TrackSummary:
    """Track objects from a prompt on frame 0 through the whole video and write an annotated .mp4.

    Args:
        model: a video model from ``build_sam3(..., mode='video')`` (or a :class:`Sam3VideoPredictor`).
        video: anything :meth:`Sam3VideoPredictor.open` accepts.
        text: noun phrase: every instance is detected and tracked.
        box: ``[x0, y0, x1, y1]`` pixels on frame 0: one object is tracked (added after the text prompt, if any).
        out: the output video (mp4v codec).
        progress: show a tqdm progress bar.
        fps: frame rate of the output; default: the input video's, or 25 for folders and lists.

    Returns:
        A :class:`TrackSummary` (frames written, object ids seen, ...).
    """
    import cv2
    from tqdm.auto import tqdm

    from .draw import annotate

    if text is None and box is None:
        raise ValueError('track_video needs a prompt: text="..." and/or box=[x0, y0, x1, y1]')
    if text is not None:
        check_text(text)
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise ValueError(f'fps must be a positive number, got {fps!r}')
    out = Path(out)
    predictor = model if isinstance(model, Sam3VideoPredictor) else Sam3VideoPredictor(model)
    t0 = time.perf_counter()
    predictor.open(video)
    if text is not None:
        predictor.add_text(0, text)
    if box is not None:
        predictor.add_box(0, box)
    fps = float(fps or predictor.fps or 25.0)
    h, w = predictor.frame_size
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
    if not writer.isOpened():
        raise ValueError(f'cannot write {out} with OpenCV (mp4v); use an .mp4 path in a writable folder')
    seen: Set[int] = set()
    written = 0
    frames = iter_video_frames(video)
    next_idx = 0
    try:
        with tqdm(total=predictor.num_frames, desc='track', unit='frame', disable=not progress) as bar:
            for r in predictor.propagate('forward', start_frame=0):
                while next_idx <= r.frame_idx:  # forward results come in frame order
                    frame = next(frames)
                    next_idx += 1
                labels = [f'#{i} {s:.2f}' for i, s in zip(r.obj_ids, r.scores)]
                drawn = annotate(frame, r.masks, r.boxes, r.scores, labels, ids=r.obj_ids)
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                written += 1
                seen.update(int(i) for i in r.obj_ids)
                bar.update(1)
    finally:
        writer.release()
    return TrackSummary(str(out), written, sorted(seen), fps, h, w, time.perf_counter() - t0)
