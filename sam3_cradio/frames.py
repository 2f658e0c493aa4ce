"""Reading videos: a video file (read sequentially with OpenCV), a folder of frames (natural order), an image, a list
or an array of frames, as (H, W, 3) uint8 RGB; their size, count and frame rate checked before a model is built."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .files import IMAGE_EXTS, list_image_files
from .images import to_rgb_array

__all__ = ['VideoLike', 'VideoInfo', 'UnreadableVideoError', 'list_frame_files', 'iter_video_frames', 'probe_video',
           'frame_names', 'frame_reader', 'is_frame_list', 'is_video_file', 'video_fps']

_logger = logging.getLogger(__name__)

# A video: a file, a folder of frames, an image, or frames in a list / array
VideoLike = str | os.PathLike | Sequence[Any] | np.ndarray

# --------------------------------------------------------------------------------------------------------------
# Reading videos
# --------------------------------------------------------------------------------------------------------------

def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a frame folder (``files.IMAGE_EXTS``), in natural order (``2.jpg`` before ``10.jpg``).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'frame folder {str(folder)!r} does not exist')
    files = list_image_files(folder)
    if not files:
        raise ValueError(
            f'frame folder {str(folder)!r} has no frames: put the video\'s frames there as image files '
            f'({", ".join(IMAGE_EXTS)}) named in order, e.g. 00000.jpg, 00001.jpg, ...')
    return files


class UnreadableVideoError(ValueError):
    """A video file OpenCV/FFmpeg cannot decode. ``str()`` is the message of the API and the command line (it names
    the path and suggests a folder of frames); front ends that take uploaded files only (the demo) compose their
    own from ``problem`` and ``advice``, with the file's name instead of its path on the server.

    Attributes:
        path: the file.
        problem: what went wrong, without the path (e.g. 'cannot be read as a video (...)').
        advice: what to do with the file itself (re-encode it), without the frame-folder alternative.
    """

    ADVICE = 'Re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4)'

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem, self.advice = Path(path), problem, self.ADVICE
        super().__init__(f'{self.path} {problem}. {self.advice} or pass a folder of its frames')


def _open_capture(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise UnreadableVideoError(path, 'cannot be read as a video (OpenCV/FFmpeg failed to open it: the file is '
                                         'broken, truncated, or not a video)')
    return cap


def _broken_video(path: Path) -> UnreadableVideoError:
    return UnreadableVideoError(path, 'cannot be read as a video: no frame could be decoded (the file is broken, '
                                      'truncated, or not a video)')


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


def is_frame_list(video: Any) -> bool:
    return isinstance(video, (list, tuple)) or (isinstance(video, np.ndarray) and video.ndim == 4)


def iter_video_frames(video: VideoLike) -> Iterator[np.ndarray]:
    """Yield the frames of ``video`` as (H, W, 3) uint8 RGB arrays at their original resolution.

    ``video``: a video file OpenCV can read (.mp4, .avi, .mov, ...), a folder of frame images, one image file
    (a 1-frame video), a list/tuple of images (paths, PIL images or arrays), or a (T, H, W[, C]) array.
    """
    if is_frame_list(video):
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
    fps: float | None


def is_video_file(video: Any) -> bool:
    return isinstance(video, (str, os.PathLike)) and Path(video).is_file() \
        and Path(video).suffix.lower() not in IMAGE_EXTS


def _check_frame_sizes(files: Sequence[Path], width: int, height: int) -> None:
    """Every frame of a folder has the first frame's size (read from the file headers, nothing decoded)."""
    for p in files[1:]:
        try:
            with Image.open(p) as im:
                size = im.size
        except OSError:
            continue  # unreadable frames are reported when read, with their own message
        if size != (width, height):
            raise ValueError(f'frame {p.name} is {size[0]}x{size[1]} but the first frame of {p.parent} is '
                             f'{width}x{height}: the frames of a video have one size (resize them, or track the '
                             'sizes as separate videos)')


def probe_video(video: VideoLike) -> VideoInfo:
    """Check that ``video`` can be read (its first frame decodes) and report its size, frame count and fps.

    Raises FileNotFoundError / ValueError with what to do, like :meth:`Sam3VideoPredictor.open`.
    """
    import cv2

    if not is_video_file(video):  # a folder, an image, a list (or a missing path): decode the first frame
        first = next(iter_video_frames(video))
        if is_frame_list(video):
            n = len(video)
        elif Path(video).is_dir():
            files = list_frame_files(video)
            n = len(files)
            _check_frame_sizes(files, first.shape[1], first.shape[0])
        else:
            n = 1
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


def frame_names(video: VideoLike, num_frames: int) -> list[str]:
    """File stems for per-frame outputs (mask PNGs, frame JPEGs): a frame folder's own file stems in frame order
    when they are unique, else ``00000``, ``00001``, ... (video files, lists, arrays)."""
    if isinstance(video, (str, os.PathLike)) and Path(video).is_dir():
        stems = [p.stem for p in list_frame_files(video)]
        if len(stems) == num_frames and len(set(stems)) == num_frames:
            return stems
    return [f'{i:05d}' for i in range(num_frames)]


def video_fps(video: VideoLike) -> float | None:
    return probe_video(video).fps if is_video_file(video) else None


def frame_reader(video: VideoLike) -> Callable[[int], np.ndarray]:
    """``read(i)`` -> frame ``i`` as (H, W, 3) uint8 RGB, reading only that frame where the source allows it (a
    list, an array, a folder, an image); a video file is decoded once into a list."""
    if is_frame_list(video):
        return lambda i: to_rgb_array(video[i])
    path = Path(video)
    if path.is_dir():
        files = list_frame_files(path)
        return lambda i: to_rgb_array(files[i])
    if path.suffix.lower() in IMAGE_EXTS:
        return lambda i: to_rgb_array(path)
    return list(_iter_video_file(path)).__getitem__
