"""The video tab's files: reading an upload within the demo's limits, browser-playable output, the example clip."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .inputs import UserError

__all__ = ['VideoPreview', 'preview_video', 'read_video', 'to_browser_video', 'make_example_video']


def _named(e: Exception, path: str | os.PathLike) -> str:
    """An error message about an upload, naming the file instead of its path on the server. The demo takes video
    files only, so an unreadable one gets the advice for the file itself (no frame folder to fall back on)."""
    from sam3_cradio.frames import UnreadableVideoError

    name = Path(path).name
    if isinstance(e, UnreadableVideoError):
        return f'{name} {e.problem}. {e.advice} and upload it again.'
    text = str(e)
    for p in (str(path), os.path.realpath(path)):  # the page also cuts any path under its upload folder
        text = text.replace(p, name)
    return text


@dataclass
class VideoPreview:
    first: np.ndarray   # frame 0, RGB
    message: str        # markdown for the status box
    too_long: bool      # over the frame limit: tracking will refuse it


def preview_video(path: str | os.PathLike, max_frames: int) -> VideoPreview:
    """Frame 0 and a description of an uploaded video (UserError when it cannot be read)."""
    from sam3_cradio.frames import iter_video_frames, probe_video

    try:
        info = probe_video(path)
        frames = iter_video_frames(path)
        first = next(frames)
        frames.close()  # releases the decoder
    except (ValueError, FileNotFoundError) as e:
        raise UserError(_named(e, path)) from None
    except StopIteration:
        raise UserError(f'{Path(path).name} holds no frame') from None
    if info.num_frames > max_frames:
        return VideoPreview(first, f'⚠ {info.num_frames} frames: over the limit of {max_frames} '
                                   f'(--max-video-frames); trim the video first.', True)
    msg = (f'{info.num_frames} frames, {info.width}x{info.height}' + (f', {info.fps:.3g} fps' if info.fps else '')
           + '. Optionally drag a box around one object on the first frame, then press Track.')
    return VideoPreview(first, msg, False)


def read_video(path: str | os.PathLike, max_frames: int, max_side: int
               ) -> tuple[np.ndarray, float, tuple[int, int], str]:
    """Frames (T, h, w, 3) uint8 (downscaled to ``max_side``), fps, original (W, H), a note.
    Refuses (UserError) unreadable videos and videos over ``max_frames``."""
    import cv2

    from sam3_cradio.frames import iter_video_frames, probe_video

    name = Path(path).name
    try:
        info = probe_video(path)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(_named(e, path)) from None
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
        raise UserError(_named(e, path)) from None
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


def make_example_video(photo: Path, folder: Path) -> Path | None:
    """A 2-second pan over ``photo`` (VP8 WebM) in ``folder``, so the video tab can be tried without a file;
    None where OpenCV cannot write VP8."""
    import cv2
    from PIL import Image

    frames = np.asarray(Image.open(photo).convert('RGB').resize((320, 320), Image.BILINEAR))
    path = folder / 'pan.webm'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'VP80'), 8, (256, 192))
    if not writer.isOpened():
        return None
    for i in range(16):
        crop = np.ascontiguousarray(frames[40:232, 4 * i:4 * i + 256])
        writer.write(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    writer.release()
    return path
