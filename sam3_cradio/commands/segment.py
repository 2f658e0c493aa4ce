"""``sam3-cradio segment``: segment images from a text, box or point prompt.

One image and no ``--format``: the annotated image to ``--out`` (``segmented.png``, or ``<stem>.png`` in an existing
folder), as the first command of the README. Otherwise a job (:func:`sam3_cradio.jobs.segment_to_files`) into the
folder ``--out`` (``segmented/``); it exits 1 when no image could be segmented, 0 when some were skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ..files import IMAGE_EXTS, check_writable
from ..jobs.formats import FORMATS
from ..options import ModelOptions
from .common import add_model_args, model_options

__all__ = ['HELP', 'EPILOG', 'add_arguments', 'run']

HELP = ('segment images (a file, folders, globs, lists of paths) from a text, box or point prompt; writes an '
        'annotated image, or COCO / JSON / PNG / YOLO / VOC files')

EPILOG = """\
formats (--format, several at once; default coco for a folder):
""" + '\n'.join(f'  {name:10s} {what}' for name, what in FORMATS.items()) + """
  always     errors.json: images that could not be read or prompted (skipped)

examples:
  sam3-cradio segment photo.jpg --text "cat, dog"                       # annotated image to segmented.png
  sam3-cradio segment photos/ --text "cat, dog" --format coco png --out runs/pets --batch 4
  sam3-cradio segment "shots/**/*.png" list.txt --box 10 20 200 240 --format yolo voc --out runs/x
  torchrun --nproc_per_node 4 -m sam3_cradio.cli segment photos/ --text car --format coco --out runs/cars

Rerunning the same command resumes (finished images are not redone); torchrun processes (and machines that
share --out) split the images; the folder is locked while a run uses it; Ctrl-C stops at once and keeps every
finished batch. Images inside --out are never inputs, so --out may lie in an input folder.

exit status: 0 when every image was segmented, or some were (the images skipped are counted and listed in
errors.json: unreadable, over 120 megapixels, a prompt that does not fit); 1 when none was; 2 for a bad option,
input or --out (said before the model is built); 130 after Ctrl-C.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('inputs', nargs='+', metavar='INPUT',
                   help='image files, folders (searched recursively), glob patterns (quoted: "photos/**/*.jpg") '
                        'or text files of image paths, folders or globs (one per line)')
    p.add_argument('--text', default=None, help='noun phrase(s), comma-separated: "cat, dog"; each is a category')
    p.add_argument('--box', type=float, nargs=4, action='append', metavar=('X0', 'Y0', 'X1', 'Y1'),
                   help='exemplar box in pixels (repeatable); with --point, the box of the clicked object')
    p.add_argument('--point', type=float, nargs=3, action='append', metavar=('X', 'Y', 'LABEL'),
                   help='click in pixels with label 1 (object) or 0 (background); repeatable')
    p.add_argument('--threshold', type=float, default=0.5, help='minimum detection score')
    p.add_argument('--format', nargs='+', action='extend', default=None, metavar='FORMAT',
                   help=f'output files, several at once: {", ".join(FORMATS)} (see below). Default: an annotated '
                        'image for one image, coco for several')
    p.add_argument('--out', type=Path, default=None,
                   help='the annotated image (one image, no --format; default segmented.png; in an existing folder: '
                        '<stem>.png), else the output folder (default segmented/)')
    p.add_argument('--batch', type=int, default=1, metavar='N', help='images per trunk pass (default 1)')
    p.add_argument('--workers', type=int, default=None, metavar='N',
                   help='image decoding processes (default: CPUs - 1, at most 4; 0: decode in the main process)')
    p.add_argument('--overwrite', action='store_true', help='discard what an earlier run left in --out')
    p.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bar')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads per process (default: torch decides)')
    add_model_args(p)


def _one_image(a: argparse.Namespace) -> bool:
    """One image file and no --format (a missing one too, to be named as such); a glob pattern is a job."""
    if len(a.inputs) != 1 or a.format:
        return False
    path = Path(a.inputs[0])
    if path.suffix.lower() not in IMAGE_EXTS or path.is_dir():
        return False
    return path.is_file() or not set('*?[') & set(a.inputs[0])


def run(a: argparse.Namespace) -> int:
    """Run ``sam3-cradio segment`` with parsed options."""
    model = model_options(a)  # checked once, before any input is read
    return _annotate_one(a, model) if _one_image(a) else _job(a, model)


def _job(a: argparse.Namespace, model: ModelOptions) -> int:
    from ..jobs.segment import segment_to_files

    out = a.out or Path('segmented')
    summary = segment_to_files(a.inputs, out, a.text, a.box, a.point, formats=a.format or ['coco'],
                               threshold=a.threshold, batch=a.batch, workers=a.workers, model=model,
                               threads=a.threads, overwrite=a.overwrite, progress=a.progress, echo=print)
    if summary is None:  # another torchrun rank: rank 0 says how it went
        return 0
    m = summary['metrics']
    if m['num_errors'] and not m['num_segmented']:
        n = m['num_images']
        what = 'the image could not' if n == 1 else f'none of the {n} images could'
        print(f'error: {what} be segmented; why, per image: {out / "errors.json"}', file=sys.stderr)
        return 1
    if m['num_errors']:
        print(f'warning: {m["num_errors"]} of {m["num_images"]} images skipped (listed in {out / "errors.json"})',
              file=sys.stderr)
    return 0


def _annotated_path(a: argparse.Namespace) -> Path:
    """Where the single-image command writes: ``--out`` (an image file name), ``<stem>.png`` in an existing
    folder, default ``segmented.png``; checked before anything is built."""
    image = Path(a.inputs[0])
    out = a.out or Path('segmented.png')
    if out.is_dir():
        out = out / f'{image.stem}.png'
    if out.suffix.lower() not in IMAGE_EXTS:
        raise ValueError(f'--out {out}: the annotated image needs an image extension ({", ".join(IMAGE_EXTS)}); '
                         'for a folder of results add --format (e.g. --format coco png)')
    if image.is_file() and out.exists() and os.path.samefile(out, image):
        raise ValueError(f'--out {out} is the input image; give another file name')
    check_writable(out, 'annotated image --out')
    return out


def _annotate_one(a: argparse.Namespace, model: ModelOptions) -> int:
    """The single-image command of the README: the annotated image to ``--out`` and a line per detection."""
    from PIL import Image

    from ..build import build_sam3
    from ..draw import draw_detections
    from ..files import save_atomic
    from ..images import to_rgb_array
    from ..jobs.segment import Prompts
    from ..predictor import Sam3ImagePredictor

    prompts = Prompts.make(a.text, a.box, a.point)
    out = _annotated_path(a)
    image = to_rgb_array(a.inputs[0])  # fail on bad options or a bad image before building the model
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    predictor = Sam3ImagePredictor(build_sam3(model, mode='image', interactive=bool(prompts.points)),
                                   confidence_threshold=a.threshold)
    predictor.set_image(image)
    result = prompts.predict(predictor)
    fmt = Image.registered_extensions()[out.suffix.lower()]  # the temporary file's name has no extension
    save_atomic(out, lambda tmp: Image.fromarray(draw_detections(image, result.to_detections())).save(tmp, fmt))
    print(f'{len(result)} objects; encoder {result.timings.get("encoder", 0):.2f}s, '
          f'decoder {result.timings.get("decoder", 0):.2f}s; wrote {out}')
    for lab, s, b in zip(result.labels, result.scores, result.boxes):
        print(f'  {lab:20s} {s:.3f}  box {np.round(b, 1).tolist()}')
    return 0
