"""``sam3-cradio track``'s job: a whole video tracked from a prompt on its first frame, written to an annotated
.mp4 and, if asked, masks, a VOS dataset root and a JSON of boxes and scores (:mod:`sam3_cradio.track_outputs`)."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..frames import VideoLike, frame_names, iter_video_frames
from ..predictor import check_text
from ..video import Sam3VideoPredictor

__all__ = ['TrackSummary', 'track_video']


@dataclass
class TrackSummary:
    """What :func:`track_video` wrote (paths None where an output was not asked for)."""
    out: str | None
    frames: int
    object_ids: list[int]
    fps: float
    height: int
    width: int
    seconds: float = 0.0
    masks: str | None = None
    vos_root: str | None = None
    json: str | None = None


def track_video(
        model: torch.nn.Module | Sam3VideoPredictor,
        video: VideoLike,
        text: str | None = None,
        box: Sequence[float] | None = None,
        out: str | os.PathLike | None = 'tracked.mp4',
        progress: bool = True,
        fps: float | None = None,
        *,
        masks_dir: str | os.PathLike | None = None,
        vos_root: str | os.PathLike | None = None,
        json_path: str | os.PathLike | None = None,
        mask_layout: str = 'davis',
        sequence: str | None = None,
) -> TrackSummary:
    """Track objects from a prompt on frame 0 through the whole video; write an annotated .mp4 and, if asked, the
    masks, a VOS dataset root and a JSON of boxes and scores (:mod:`sam3_cradio.track_outputs`).

    Args:
        model: a video model from ``build_sam3(..., mode='video')`` (or a :class:`Sam3VideoPredictor`).
        video: anything :meth:`Sam3VideoPredictor.open` accepts.
        text: noun phrase: every instance is detected and tracked.
        box: ``[x0, y0, x1, y1]`` pixels on frame 0: one object is tracked (added after the text prompt, if any).
        out: the output video (mp4v codec); None writes none.
        progress: show a tqdm progress bar.
        fps: frame rate of the output; default: the input video's, or 25 for folders and lists.
        masks_dir: per-frame mask PNGs in ``mask_layout`` (:class:`~sam3_cradio.track_outputs.VosMaskWriter`).
        vos_root: a dataset root that ``sam3-cradio eval vos`` reads: frames, masks and the sequence list
            (:class:`~sam3_cradio.track_outputs.VosRootWriter`).
        json_path: per-frame object ids, boxes, scores and areas
            (:class:`~sam3_cradio.track_outputs.TrackJsonWriter`).
        mask_layout: 'davis' (one palette label map per frame) or 'sav' (a binary PNG per object and frame).
        sequence: the sequence name in ``vos_root``; default: the video's file or folder name ('video' for lists).

    Returns:
        A :class:`TrackSummary` (frames written, object ids seen, paths, ...).
    """
    import cv2
    from tqdm.auto import tqdm

    from ..draw import draw_detections
    from ..track_outputs import (
        LAYOUTS,
        TrackJsonWriter,
        VosMaskWriter,
        VosRootWriter,
        check_outputs,
        staged_dir,
        staged_file,
    )

    if text is None and box is None:
        raise ValueError('track_video needs a prompt: text="..." and/or box=[x0, y0, x1, y1]')
    if text is not None:
        check_text(text)
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise ValueError(f'fps must be a positive number, got {fps!r}')
    if mask_layout not in LAYOUTS:
        raise ValueError(f'mask_layout must be one of {LAYOUTS}, got {mask_layout!r}')
    if out is None and masks_dir is None and vos_root is None and json_path is None:
        raise ValueError('track_video has nothing to write: give out, masks_dir, vos_root or json_path')
    if sequence is None and vos_root is not None:
        sequence = Path(video).stem if isinstance(video, (str, os.PathLike)) else 'video'
    check_outputs(out, masks_dir, vos_root, json_path, sequence, mask_layout)  # before a frame is read
    predictor = model if isinstance(model, Sam3VideoPredictor) else Sam3VideoPredictor(model)
    t0 = time.perf_counter()
    predictor.open(video)
    if text is not None:
        predictor._add_text(0, text, stacklevel=3)  # a long text's warning points at the caller of track_video
    if box is not None:
        predictor.add_box(0, box)
    h, w = predictor.frame_size
    names = frame_names(video, predictor.num_frames)
    fps = float(fps or predictor.fps or 25.0)
    writer = None
    info = {'video': str(video) if isinstance(video, (str, os.PathLike)) else None,
            'num_frames': predictor.num_frames, 'height': h, 'width': w, 'fps': predictor.fps,
            'prompt': {'frame': 0, 'text': text.strip() if text is not None else None,
                       'box': None if box is None else [float(v) for v in box]}}
    # the video and the masks are written beside their places and take them only when the run succeeded: an
    # existing output survives a failed or interrupted run
    with contextlib.ExitStack() as stack:
        if out is not None:
            out = Path(out)
            staged = stack.enter_context(staged_file(out))
            writer = cv2.VideoWriter(str(staged), cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
            if not writer.isOpened():
                raise ValueError(f'cannot write {out} with OpenCV (mp4v); use an .mp4 path in a writable folder')
        masks = None
        if masks_dir is not None:
            masks = stack.enter_context(VosMaskWriter(stack.enter_context(staged_dir(masks_dir)), names, mask_layout))
        root = stack.enter_context(VosRootWriter(vos_root, sequence, names, mask_layout)) \
            if vos_root is not None else None
        js = TrackJsonWriter(json_path, names, info) if json_path is not None else None
        seen: set[int] = set()
        written = 0
        frames = iter_video_frames(video)
        next_idx = 0
        try:
            with tqdm(total=predictor.num_frames, desc='track', unit='frame', disable=not progress) as bar:
                for r in predictor.propagate('forward', start_frame=0):
                    while next_idx <= r.frame_idx:  # forward results come in frame order
                        frame = next(frames)
                        next_idx += 1
                    if writer is not None:
                        drawn = draw_detections(frame, r.to_detections())  # labels '#<id> <score>', colour per id
                        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                    if masks is not None:
                        masks.write(r)
                    if root is not None:
                        root.write(frame, r)
                    if js is not None:
                        js.write(r)
                    written += 1
                    seen.update(int(i) for i in r.obj_ids)
                    bar.update(1)
        finally:
            if writer is not None:
                writer.release()
        if js is not None:  # only a finished run: a reader never takes a partial JSON for the whole video
            js.close()
    return TrackSummary(None if out is None else str(out), written, sorted(seen), fps, h, w,
                        time.perf_counter() - t0, masks=None if masks_dir is None else str(masks_dir),
                        vos_root=None if vos_root is None else str(vos_root),
                        json=None if json_path is None else str(json_path))
