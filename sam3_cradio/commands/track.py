"""``sam3-cradio track``: track objects through a video from a text prompt or a first-frame box."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_args, model_options, say_warning

__all__ = ['HELP', 'add_arguments', 'run']

HELP = 'track objects through a video from a text prompt or a first-frame box'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('video', type=Path, help='a video file (mp4, ...) or a folder of frames')
    p.add_argument('--text', default=None, help='noun phrase, e.g. "person"')
    p.add_argument('--box', type=float, nargs=4, default=None, metavar=('X0', 'Y0', 'X1', 'Y1'),
                   help='box of one object on the first frame, in pixels')
    p.add_argument('--fps', type=float, default=None, help='output frame rate (default: the input\'s, else 25)')
    p.add_argument('--out', type=Path, default=Path('tracked.mp4'), help='the annotated video')
    p.add_argument('--masks-dir', type=Path, default=None, metavar='DIR',
                   help='also write per-frame masks there, named after the frames (--mask-layout)')
    p.add_argument('--mask-layout', choices=('davis', 'sav'), default='davis',
                   help='davis: one palette PNG per frame, 0 background, 1..n objects in order of appearance; '
                        'sav: DIR/<object id>/<frame>.png, a binary PNG per object (overlaps kept)')
    p.add_argument('--vos-root', type=Path, default=None, metavar='DIR',
                   help='also write a VOS dataset root (frames, masks, sequence list in the --mask-layout) that '
                        '"sam3-cradio eval vos --dataset davis|sav --root DIR" reads')
    p.add_argument('--sequence', default=None, metavar='NAME',
                   help='the sequence name in --vos-root (default: the video\'s file or folder name)')
    p.add_argument('--json', type=Path, default=None, metavar='PATH',
                   help='also write per-frame object ids, boxes (xyxy px), scores and mask areas as JSON')
    add_model_args(p)


def run(a: argparse.Namespace) -> int:
    import warnings

    from ..build import build_sam3
    from ..frames import probe_video
    from ..jobs.track import track_video
    from ..predictor import TextTruncatedWarning, check_box, check_text, text_overflow
    from ..track_outputs import check_outputs

    if a.text is None and a.box is None:
        raise ValueError('give a prompt: --text and/or --box X0 Y0 X1 Y1')
    if a.text is not None:
        check_text(a.text)
    model = model_options(a)
    sequence = a.sequence or (Path(a.video).stem if a.vos_root is not None else None)
    check_outputs(a.out, a.masks_dir, a.vos_root, a.json, sequence, a.mask_layout)
    info = probe_video(a.video)  # fail on bad options, outputs or a bad video before building the model
    if a.box is not None:
        check_box(a.box, info.height, info.width)
    overflow = text_overflow(a.text.strip()) if a.text is not None else None
    if overflow is not None:  # said once, before the model is built
        say_warning(overflow.message())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', TextTruncatedWarning)  # (the predictor's own warning: said above)
        summary = track_video(build_sam3(model, mode='video'), a.video, text=a.text, box=a.box, out=a.out, progress=True,
                              fps=a.fps, masks_dir=a.masks_dir, vos_root=a.vos_root, json_path=a.json,
                              mask_layout=a.mask_layout, sequence=a.sequence)
    print(f'wrote {summary.frames} frames ({summary.width}x{summary.height}, {summary.fps:g} fps) to {summary.out}; '
          f'objects: {summary.object_ids or "none"} ({summary.seconds:.1f}s)')
    if summary.masks:
        print(f'masks ({a.mask_layout} layout): {summary.masks}')
    if summary.vos_root:
        print(f'VOS root: {summary.vos_root} (sequence {a.sequence or Path(a.video).stem}); score it with '
              f'sam3-cradio eval vos --dataset {a.mask_layout} --root {summary.vos_root}')
    if summary.json:
        print(f'boxes and scores: {summary.json}')
    return 0
