"""Command line: ``sam3-cradio <command>``."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

__all__ = ['main']


def _encode(a: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .cradio import load_cradio
    from .images import image_to_tensor

    model = load_cradio(a.model, adaptor_names=a.adaptor, window_size=a.window_size, device=a.device)
    if a.resolution:
        h, w = (a.resolution * 2)[:2]
    else:
        h, w = model.preferred_resolution or (512, 512)
    res = model.nearest_supported_resolution(h, w)
    if res != (h, w):
        print(f'{h}x{w} is not supported with window_size={a.window_size}; using {res[0]}x{res[1]}')
    tensors = {}
    with torch.inference_mode():
        for path in a.images:
            x = image_to_tensor(path, res).to(a.device)
            out = model(x, feature_fmt='NCHW')
            for name, o in out.items():
                tensors[f'{Path(path).name}/{name}/summary'] = o.summary[0].float().cpu().contiguous()
                tensors[f'{Path(path).name}/{name}/features'] = o.features[0].float().cpu().contiguous()
    for k, v in tensors.items():
        print(f'{k:60s} {tuple(v.shape)}')
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(a.out))
    print(f'wrote {len(tensors)} tensors to {a.out}')
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--backbone', default='cradio_v4_h',
                   help='cradio_v4_h, cradio_v4_so400m, pe (SAM3\'s own encoder), or cradio_tiny (tests)')
    p.add_argument('--window-size', type=int, default=None,
                   help='C-RADIO ViTDet window (divides the 72x72 grid at 1152 px: 6, 8, 12, 18, 24); default global')
    p.add_argument('--sam3-checkpoint', default=None, help='local sam3.pt (default: HF facebook/sam3)')
    p.add_argument('--cradio-checkpoint', default=None, help='local C-RADIO .pth.tar (default: the release)')
    p.add_argument('--random-weights', action='store_true', help='no downloads: random SAM3 weights, to try the tool')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')


def _build(a: argparse.Namespace, mode: str):
    from .build import build_sam3

    return build_sam3(a.backbone, a.window_size, mode=mode, pretrained=not a.random_weights,
                      sam3_checkpoint=a.sam3_checkpoint, cradio_checkpoint=a.cradio_checkpoint, device=a.device)


def _segment(a: argparse.Namespace) -> int:
    from PIL import Image

    from .draw import annotate
    from .images import to_rgb_array
    from .predictor import Sam3ImagePredictor

    if not (a.text or a.box or a.point):
        raise ValueError('give a prompt: --text, --box or --point')
    image = to_rgb_array(a.image)  # fail on a bad image before building the model
    predictor = Sam3ImagePredictor(_build(a, 'image'), confidence_threshold=a.threshold)
    predictor.set_image(image)
    if a.point:
        points = [p[:2] for p in a.point]
        labels = [int(p[2]) for p in a.point]
        result = predictor.predict_points(points, labels, box=a.box[0] if a.box else None, multimask_output=False)
    elif a.box:
        result = predictor.predict_boxes([b for b in a.box], text=a.text)
    else:
        result = predictor.predict_text(a.text)
    labels = [f'{lab} {s:.2f}' for lab, s in zip(result.labels, result.scores)]
    Image.fromarray(annotate(image, result.masks, result.boxes, result.scores, labels)).save(a.out)
    print(f'{len(result)} objects; encoder {result.timings.get("encoder", 0):.2f}s, '
          f'decoder {result.timings.get("decoder", 0):.2f}s; wrote {a.out}')
    for lab, s, b in zip(result.labels, result.scores, result.boxes):
        print(f'  {lab:20s} {s:.3f}  box {np.round(b, 1).tolist()}')
    return 0


def _track(a: argparse.Namespace) -> int:
    from .video import main_track

    a.pretrained = not a.random_weights
    return main_track(a)


def _demo(argv: List[str]) -> int:
    """``sam3-cradio demo [options]``: the Gradio demo (demo/app.py of a source checkout; pip install -e ".[demo]")."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / 'demo' / 'app.py'
    if not path.is_file():
        print(f'error: the demo runs from a source checkout of sam3-cradio ({path} is missing)', file=sys.stderr)
        return 2
    name = 'sam3_cradio_demo_app'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module.main(argv)


def _bench(a: argparse.Namespace) -> int:
    from .benchmark import run_cli

    print(run_cli(a))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sam3-cradio', description='C-RADIOv4 as the image backbone of SAM3.')
    sub = p.add_subparsers(dest='command', required=True)

    enc = sub.add_parser('encode', help='C-RADIO summary and spatial features of images, to a .safetensors file')
    enc.add_argument('images', nargs='+', type=Path)
    enc.add_argument('--model', default='c-radio_v4-h',
                     help="release name (c-radio_v4-h, c-radio_v4-so400m) or a local .pth.tar / .safetensors")
    enc.add_argument('--adaptor', action='append', default=[], help="adaptor heads to run, e.g. sam3 (repeatable)")
    enc.add_argument('--window-size', type=int, default=None, help='ViTDet window in patches (default: global)')
    enc.add_argument('--resolution', type=int, nargs='+', default=None, metavar='PX',
                     help='input size: one side (square) or H W; rounded to what the window size allows')
    enc.add_argument('--device', default='cpu')
    enc.add_argument('--out', type=Path, default=Path('features.safetensors'))
    enc.set_defaults(func=_encode)

    seg = sub.add_parser('segment', help='segment an image from a text, box or point prompt; writes an annotated image')
    seg.add_argument('image', type=Path)
    seg.add_argument('--text', default=None, help='noun phrase(s), comma-separated: "cat, dog"')
    seg.add_argument('--box', type=float, nargs=4, action='append', metavar=('X0', 'Y0', 'X1', 'Y1'),
                     help='exemplar box in pixels (repeatable); with --point, the box of the clicked object')
    seg.add_argument('--point', type=float, nargs=3, action='append', metavar=('X', 'Y', 'LABEL'),
                     help='click in pixels with label 1 (object) or 0 (background); repeatable')
    seg.add_argument('--threshold', type=float, default=0.5, help='minimum detection score')
    seg.add_argument('--out', type=Path, default=Path('segmented.png'))
    _add_model_args(seg)
    seg.set_defaults(func=_segment)

    trk = sub.add_parser('track', help='track objects through a video from a text prompt or a first-frame box')
    trk.add_argument('video', type=Path, help='a video file (mp4, ...) or a folder of frames')
    trk.add_argument('--text', default=None, help='noun phrase, e.g. "person"')
    trk.add_argument('--box', type=float, nargs=4, default=None, metavar=('X0', 'Y0', 'X1', 'Y1'),
                     help='box of one object on the first frame, in pixels')
    trk.add_argument('--fps', type=float, default=None, help='output frame rate (default: the input\'s, else 24)')
    trk.add_argument('--out', type=Path, default=Path('tracked.mp4'))
    _add_model_args(trk)
    trk.set_defaults(func=_track)

    sub.add_parser('demo', add_help=False, help='Gradio web demo (sam3-cradio demo --help)')
    sub.add_parser('distill', add_help=False,
                   help='adapt the encoder (sam3 head, last blocks or all) to SAM3 by distillation '
                        '(sam3-cradio distill --help)')

    from .benchmark import add_arguments

    bench = sub.add_parser('bench', help='speed and memory: C-RADIOv4 (global, ViTDet windows) vs SAM3\'s PE',
                           description='Speed and memory benchmark; the options of eval/bench.py '
                                       '(sam3_cradio/benchmark.py).')
    add_arguments(bench)
    bench.set_defaults(func=_bench)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['demo']:  # the demo parses its own options
        return _demo(argv[1:])
    if argv[:1] == ['distill']:  # hydra overrides: it parses its own options
        from .distill import main_distill
        try:
            return main_distill(argv[1:])
        except (ValueError, FileNotFoundError) as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
